"""Configuring an organization's identity provider: metadata pasted or fetched (SSRF-safe, bounded),
checked before it is stored, audited; removal; who may, on which plan."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from allauth.socialaccount.models import SocialAccount
from django.test import Client
from pytest_django.fixtures import Settings

from apps.accounts.principals import Principal
from apps.rbac.models import Role
from apps.sso.models import IdentityProvider
from apps.sso.services import IdentityProviderRefused, identity_provider_configure, identity_provider_delete
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR, member_make
from tests.sso.idp import TestIdp, key_pair
from tests.sso.saml_setup import (
    SsoOrganization,
    domain_verify,
    plan_set,
    sso_counters_forget,
    sso_organization,
    sso_plan,
)


@pytest.fixture(autouse=True)
def _fresh_counters() -> Iterator[None]:
    sso_counters_forget()
    yield
    sso_counters_forget()


@pytest.fixture
def sso_tenant(two_tenants: tuple[Organization, Organization]) -> Organization:
    organization = two_tenants[0]
    plan_set(organization, sso_plan())
    return organization


def _configure(organization: Organization, actor: Principal = TEST_ACTOR, **changes: object) -> IdentityProvider:
    arguments: dict[str, object] = {
        "organization": organization,
        "actor": actor,
        "enabled": True,
        "allow_idp_initiated": False,
        "default_role": "viewer",
        **changes,
    }
    return identity_provider_configure(**arguments)  # type: ignore[arg-type]


def _member_actor(organization: Organization, role: Role) -> Principal:
    return Principal.for_user(member_make(organization=organization, role=role))


def _audit_actions(organization: SsoOrganization | Organization) -> list[str]:
    from apps.audit.models import AuditEvent
    from apps.tenants.connection import organization_schema

    target = organization.organization if isinstance(organization, SsoOrganization) else organization
    with organization_schema(target):
        return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


def test_configure_from_pasted_metadata_stores_and_audits(sso_tenant: Organization) -> None:
    idp = TestIdp("conf")
    row = _configure(sso_tenant, metadata_xml=idp.metadata_xml())

    assert row.entity_id == idp.entity_id
    assert row.sso_url == idp.sso_url
    assert row.certificates == [idp.keys.cert_b64]
    assert row.metadata_url == "" and row.metadata_fetched_at is None
    assert row.default_role == "viewer" and row.enabled and not row.allow_idp_initiated
    from apps.audit.models import AuditEvent
    from apps.tenants.connection import organization_schema

    with organization_schema(sso_tenant):
        event = AuditEvent.objects.filter(action="sso.configured").get()
    assert event.metadata["entity_id"] == idp.entity_id and event.metadata["created"] is True
    assert len(event.metadata["certificates_sha256"]) == 1


def test_switches_change_without_new_metadata(sso_tenant: Organization) -> None:
    idp = TestIdp("conf")
    _configure(sso_tenant, metadata_xml=idp.metadata_xml())
    row = _configure(sso_tenant, enabled=False, allow_idp_initiated=True, default_role="developer")
    assert row.entity_id == idp.entity_id and row.certificates == [idp.keys.cert_b64]
    assert not row.enabled and row.allow_idp_initiated and row.default_role == "developer"
    assert _audit_actions(sso_tenant).count("sso.configured") == 2


def test_a_second_signing_certificate_is_accepted_for_rollover(two_tenants: tuple[Organization, Organization]) -> None:
    organization = two_tenants[0]
    idp = TestIdp("roll")
    nxt = key_pair("roll-next")
    org = sso_organization(organization, idp=idp, allow_idp_initiated=True)
    _configure(organization, metadata_xml=idp.metadata_xml(extra_certificates=[nxt.cert_b64]), allow_idp_initiated=True)
    assert org.row().certificates == [idp.keys.cert_b64, nxt.cert_b64]

    # Signed with the new key (the IdP switched over): accepted; and the old one still is.
    assert org.post(idp.response(org.spec("new@" + org.domain), keys=nxt)).status_code == 302
    assert org.post(idp.response(org.spec("old@" + org.domain))).status_code == 302
    # A key that is in neither certificate is not.
    assert org.post(idp.response(org.spec(), keys=key_pair("stranger"))).status_code == 400


def _metadata_without_redirect_binding() -> str:
    return (
        TestIdp("conf")
        .metadata_xml()
        .replace("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect", "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST")
    )


BAD_METADATA: dict[str, Callable[[], str]] = {
    "no signing certificate": lambda: TestIdp("conf").metadata_xml(with_certificate=False),
    "no HTTP-Redirect SSO": _metadata_without_redirect_binding,
    "not XML": lambda: "this is not metadata",
    "not an IdP": lambda: '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="x"/>',
    "entity expansion": lambda: (
        '<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="&lol2;"/>'
    ),
    "http SSO URL": lambda: TestIdp("conf").metadata_xml().replace("https://idp-conf", "http://idp-conf"),
    "certificate not X.509": lambda: TestIdp("conf").metadata_xml().replace(TestIdp("conf").keys.cert_b64, "AAAA"),
    "larger than 256 KiB": lambda: TestIdp("conf").metadata_xml() + "<!--" + "x" * 262_144 + "-->",
}


@pytest.mark.parametrize("label", sorted(BAD_METADATA))
def test_unusable_metadata_is_refused_and_nothing_is_stored(sso_tenant: Organization, label: str) -> None:
    with pytest.raises(IdentityProviderRefused) as refused:
        _configure(sso_tenant, metadata_xml=BAD_METADATA[label]())
    assert refused.value.code == "invalid_metadata"
    assert "<" not in str(refused.value)  # the message says why, it doesn't echo the document
    assert not IdentityProvider.objects.filter(organization=sso_tenant).exists()
    assert "sso.configured" not in _audit_actions(sso_tenant)


class _MetadataServer:
    """A real HTTP server on 127.0.0.1 answering each path as told (status, body, headers)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self.hits: list[str] = []
        routes, hits = self.routes, self.hits

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                hits.append(self.path)
                status, body, headers = routes.get(self.path, (404, b"not found", {}))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def metadata_server(settings: Settings) -> Iterator[_MetadataServer]:
    settings.SSO_METADATA_ALLOW_HTTP = True  # the local server speaks http
    server = _MetadataServer()
    yield server
    server.close()


def test_configure_from_a_metadata_url(sso_tenant: Organization, metadata_server: _MetadataServer) -> None:
    idp = TestIdp("url")
    metadata_server.routes["/metadata.xml"] = (200, idp.metadata_xml().encode(), {"Content-Type": "application/xml"})
    url = f"{metadata_server.base}/metadata.xml"
    row = _configure(sso_tenant, metadata_url=url)
    assert metadata_server.hits == ["/metadata.xml"]
    assert row.entity_id == idp.entity_id and row.metadata_url == url and row.metadata_fetched_at is not None
    assert row.metadata_xml.startswith("<?xml")


@pytest.mark.parametrize(
    ("route", "answer", "expected"),
    [
        ("/redirect", (302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"}), "redirects"),
        ("/missing", (404, b"nope", {}), "HTTP 404"),
        ("/huge", (200, b"<x>" + b"a" * (256 * 1024 + 10) + b"</x>", {}), "larger than"),
    ],
)
def test_metadata_url_answers_that_are_refused(
    sso_tenant: Organization,
    metadata_server: _MetadataServer,
    route: str,
    answer: tuple[int, bytes, dict[str, str]],
    expected: str,
) -> None:
    metadata_server.routes[route] = answer
    with pytest.raises(IdentityProviderRefused) as refused:
        _configure(sso_tenant, metadata_url=f"{metadata_server.base}{route}")
    assert refused.value.code == "invalid_metadata" and expected in str(refused.value)
    assert not IdentityProvider.objects.filter(organization=sso_tenant).exists()


def test_metadata_url_must_be_https(sso_tenant: Organization) -> None:
    with pytest.raises(IdentityProviderRefused, match="https"):
        _configure(sso_tenant, metadata_url="http://idp.example.test/metadata")


def test_metadata_url_on_a_private_address_is_never_fetched(
    sso_tenant: Organization, metadata_server: _MetadataServer, settings: Settings
) -> None:
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = False  # as in production
    metadata_server.routes["/metadata.xml"] = (200, TestIdp("url").metadata_xml().encode(), {})
    with pytest.raises(IdentityProviderRefused, match="can't be fetched"):
        _configure(sso_tenant, metadata_url=f"{metadata_server.base}/metadata.xml")
    assert metadata_server.hits == []


def test_a_plan_without_sso_cannot_configure(two_tenants: tuple[Organization, Organization]) -> None:
    organization = two_tenants[0]  # on the free plan
    with pytest.raises(IdentityProviderRefused) as refused:
        _configure(organization, metadata_xml=TestIdp("conf").metadata_xml())
    assert refused.value.code == "plan_without_sso"


def test_only_members_who_manage_security_may_configure(sso_tenant: Organization) -> None:
    with pytest.raises(IdentityProviderRefused) as refused:
        _configure(
            sso_tenant,
            actor=_member_actor(sso_tenant, Role.DEVELOPER),
            metadata_xml=TestIdp("conf").metadata_xml(),
        )
    assert refused.value.code == "permission_denied"
    admin = _member_actor(sso_tenant, Role.ADMIN)
    assert _configure(sso_tenant, actor=admin, metadata_xml=TestIdp("conf").metadata_xml()).pk is not None


def test_the_default_role_is_never_owner(sso_tenant: Organization) -> None:
    with pytest.raises(IdentityProviderRefused) as refused:
        _configure(sso_tenant, metadata_xml=TestIdp("conf").metadata_xml(), default_role="owner")
    assert refused.value.code == "invalid_role"
    with pytest.raises(IdentityProviderRefused):
        _configure(sso_tenant, metadata_xml=TestIdp("conf").metadata_xml(), default_role="superuser")


def test_delete_stops_sso_and_audits(two_tenants: tuple[Organization, Organization]) -> None:
    org = sso_organization(two_tenants[0], allow_idp_initiated=True)
    assert org.post(org.idp.response(org.spec())).status_code == 302
    assert SocialAccount.objects.filter(provider=f"saml:{org.slug}").exists()

    identity_provider_delete(organization=org.organization, actor=_member_actor(org.organization, Role.ADMIN))

    assert not IdentityProvider.objects.filter(organization=org.organization).exists()
    assert not SocialAccount.objects.filter(provider=f"saml:{org.slug}").exists()
    assert "sso.removed" in _audit_actions(org)
    browser = Client(HTTP_HOST=org.host)
    assert browser.post(f"/accounts/saml/{org.slug}/acs/", {"SAMLResponse": "x"}).status_code == 404
    with pytest.raises(IdentityProviderRefused):
        identity_provider_delete(organization=org.organization, actor=TEST_ACTOR)


def test_one_organization_s_idp_is_not_another_s(two_tenants: tuple[Organization, Organization]) -> None:
    tenant_a, tenant_b = two_tenants
    org_a = sso_organization(tenant_a)
    plan_set(tenant_b, sso_plan())
    domain_verify(tenant_b, "corp-b.example")
    browser_b = Client(HTTP_HOST=f"{tenant_b.slug}.localhost")
    assert browser_b.get(f"/accounts/saml/{tenant_b.slug}/metadata/").status_code == 404  # B has none
    assert browser_b.get(f"/accounts/saml/{org_a.slug}/metadata/").status_code == 404  # A's, on B's host
    assert org_a.client.get(f"/accounts/saml/{org_a.slug}/metadata/").status_code == 200
    # A member of B who manages security can't touch A's IdP through B.
    with pytest.raises(IdentityProviderRefused):
        identity_provider_delete(organization=tenant_a, actor=_member_actor(tenant_b, Role.ADMIN))
    assert IdentityProvider.objects.filter(organization=tenant_a).exists()
