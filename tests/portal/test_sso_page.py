"""The Single sign-on settings page (/settings/sso/): the values for the IdP, the IdP form, verified
domains with their DNS record, verify/remove/require; gated by SECURITY_MANAGE and by the plan."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from apps.accounts.models import User
from apps.billing.models import Plan
from apps.billing.selectors import entitlement
from apps.rbac.models import Role
from apps.sso.domains import verification_record_value
from apps.sso.models import IdentityProvider, SsoDomain
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from tests.factories import member_make
from tests.sso.idp import TestIdp
from tests.support.dns_server import RunningDnsServer, dns_server_running


@pytest.fixture
def dns_server(settings: Any) -> Iterator[RunningDnsServer]:
    with dns_server_running() as server:
        settings.SSO_DNS_NAMESERVERS = [server.address]
        settings.SSO_DNS_TIMEOUT_SECONDS = 3
        settings.SSO_DNS_CHECKS_PER_MINUTE = 10_000
        yield server


def _plan(organization: Organization, code: str) -> None:
    organization.plan = Plan.objects.get(code=code)
    organization.save(update_fields=["plan"])
    organization_cache_forget()


@pytest.fixture
def orgs(two_tenants: tuple[Organization, Organization]) -> tuple[Organization, Organization]:
    for organization in two_tenants:
        _plan(organization, "enterprise")
    return two_tenants


def _client(organization: Organization, user: User) -> Client:
    client = Client(HTTP_HOST=f"{organization.slug}.localhost")
    client.force_login(user)
    return client


def _admin(organization: Organization) -> Client:
    return _client(organization, member_make(organization=organization, role=Role.ADMIN))


def _page(client: Client) -> str:
    response = client.get("/settings/sso/")
    assert response.status_code == 200
    return response.content.decode()


def test_the_page_shows_what_the_identity_provider_needs(orgs: tuple[Organization, Organization]) -> None:
    org_a, _ = orgs
    html = _page(_admin(org_a))
    assert "http://tenant-a.localhost/accounts/saml/tenant-a/acs/" in html
    assert "http://tenant-a.localhost/accounts/saml/tenant-a/metadata/" in html  # the entity ID
    # The metadata file exists once an IdP does.
    assert "Download our SP metadata" not in html and "once your identity provider is saved" in html
    for label in (
        "Identity provider metadata (XML)",
        "…or the metadata&#x27;s URL",
        "Members can sign in through this identity provider",
        "Role of people who join through SSO",
        "Email domain",
    ):
        assert f">{label}</label>" in html, label
    assert "Save identity provider" in html and "Add domain" in html
    assert '<a href="/settings/sso/" aria-current="page">Single sign-on</a>' in html


def test_the_default_role_offered_is_never_owner(orgs: tuple[Organization, Organization]) -> None:
    html = _page(_admin(orgs[0]))
    assert '<option value="viewer" selected>' in html
    assert '<option value="owner"' not in html


def test_identity_provider_configured_from_pasted_metadata(orgs: tuple[Organization, Organization]) -> None:
    org_a, org_b = orgs
    client = _admin(org_a)
    idp = TestIdp("portal-a")
    saved = client.post(
        "/settings/sso/",
        {"metadata_xml": idp.metadata_xml(), "enabled": "on", "default_role": "developer"},
    )
    assert saved.status_code == 302
    row = IdentityProvider.objects.get(organization=org_a)
    assert (row.entity_id, row.enabled, row.allow_idp_initiated, row.default_role) == (
        idp.entity_id,
        True,
        False,
        "developer",
    )
    html = _page(client)
    assert idp.entity_id in html and "Enabled" in html and "Remove identity provider" in html
    assert 'href="http://tenant-a.localhost/accounts/saml/tenant-a/metadata/?download=1" download' in html
    sp_metadata = client.get("/accounts/saml/tenant-a/metadata/?download=1")
    assert sp_metadata.status_code == 200 and b"EntityDescriptor" in sp_metadata.content
    assert b"http://tenant-a.localhost/accounts/saml/tenant-a/acs/" in sp_metadata.content
    assert not IdentityProvider.objects.filter(organization=org_b).exists()


def test_bad_metadata_is_a_form_error(orgs: tuple[Organization, Organization]) -> None:
    client = _admin(orgs[0])
    response = client.post(
        "/settings/sso/", {"metadata_xml": "<not-metadata/>", "enabled": "on", "default_role": "viewer"}
    )
    assert response.status_code == 400
    assert 'class="form-errors" role="alert"' in response.content.decode()
    both = client.post(
        "/settings/sso/",
        {"metadata_xml": "<x/>", "metadata_url": "https://idp.example/metadata", "default_role": "viewer"},
    )
    assert both.status_code == 400
    assert "Give the metadata XML or its URL, not both." in both.content.decode()
    assert not IdentityProvider.objects.filter(organization=orgs[0]).exists()


def test_removing_the_identity_provider(orgs: tuple[Organization, Organization]) -> None:
    org_a, _ = orgs
    client = _admin(org_a)
    client.post("/settings/sso/", {"metadata_xml": TestIdp("portal-a").metadata_xml(), "default_role": "viewer"})
    assert client.post("/settings/sso/identity-provider/delete/").status_code == 302
    assert not IdentityProvider.objects.filter(organization=org_a).exists()


def test_add_verify_and_require_a_domain(orgs: tuple[Organization, Organization], dns_server: RunningDnsServer) -> None:
    org_a, _ = orgs
    client = _admin(org_a)
    added = client.post("/settings/sso/domains/", {"domain": "Acme.Test"})
    assert added.status_code == 302
    row = SsoDomain.objects.get(organization=org_a)
    assert added["Location"] == f"/settings/sso/#domain-{row.pk}"
    html = _page(client)
    assert "_cognitionos-verification.acme.test" in html
    assert verification_record_value(row.verification_token) in html
    assert 'Verify<span class="visually-hidden"> acme.test</span>' in html

    # Not published yet: the row says what was looked up.
    missing = client.post(f"/settings/sso/domains/{row.pk}/verify/")
    assert missing.status_code == 400
    assert "No TXT record found at _cognitionos-verification.acme.test." in missing.content.decode()

    dns_server.txt["_cognitionos-verification.acme.test"] = [verification_record_value(row.verification_token)]
    assert client.post(f"/settings/sso/domains/{row.pk}/verify/").status_code == 302
    html = _page(client)
    assert "Verified" in html and "through DNS" in html and "Require SSO" in html

    # Requiring SSO needs an enabled IdP first.
    refused = client.post(f"/settings/sso/domains/{row.pk}/require/", {"required": "1"})
    assert refused.status_code == 400
    assert "Configure and enable the identity provider first." in refused.content.decode()
    client.post(
        "/settings/sso/",
        {"metadata_xml": TestIdp("portal-a").metadata_xml(), "enabled": "on", "default_role": "viewer"},
    )
    assert client.post(f"/settings/sso/domains/{row.pk}/require/", {"required": "1"}).status_code == 302
    row.refresh_from_db()
    assert row.require_sso
    assert "SSO required" in _page(client)
    assert client.post(f"/settings/sso/domains/{row.pk}/require/", {"required": "0"}).status_code == 302
    row.refresh_from_db()
    assert not row.require_sso


def test_a_public_provider_domain_is_refused_in_the_form(orgs: tuple[Organization, Organization]) -> None:
    response = _admin(orgs[0]).post("/settings/sso/domains/", {"domain": "gmail.com"})
    assert response.status_code == 400
    assert "gmail.com is a public email provider" in response.content.decode()


def test_another_organizations_domain_is_neither_listed_nor_reachable(
    orgs: tuple[Organization, Organization], dns_server: RunningDnsServer
) -> None:
    org_a, org_b = orgs
    _admin(org_a).post("/settings/sso/domains/", {"domain": "acme.test"})
    row = SsoDomain.objects.get(organization=org_a)
    dns_server.txt["_cognitionos-verification.acme.test"] = [verification_record_value(row.verification_token)]
    client_b = _admin(org_b)
    assert "acme.test" not in _page(client_b)
    assert client_b.post(f"/settings/sso/domains/{row.pk}/verify/").status_code == 404
    assert client_b.post(f"/settings/sso/domains/{row.pk}/remove/").status_code == 404
    assert client_b.post(f"/settings/sso/domains/{row.pk}/require/", {"required": "1"}).status_code == 404
    row.refresh_from_db()
    assert row.verified_at is None
    # Once A verifies it, B can't claim it.
    _admin(org_a).post(f"/settings/sso/domains/{row.pk}/verify/")
    claimed = client_b.post("/settings/sso/domains/", {"domain": "acme.test"})
    assert claimed.status_code == 400
    assert "acme.test is verified by another organization" in claimed.content.decode()


def test_remove_a_domain(orgs: tuple[Organization, Organization]) -> None:
    org_a, _ = orgs
    client = _admin(org_a)
    client.post("/settings/sso/domains/", {"domain": "acme.test"})
    row = SsoDomain.objects.get(organization=org_a)
    assert client.post(f"/settings/sso/domains/{row.pk}/remove/").status_code == 302
    assert not SsoDomain.objects.filter(pk=row.pk).exists()


def test_a_plan_without_sso_shows_no_form_and_refuses_posts(two_tenants: tuple[Organization, Organization]) -> None:
    org_a, _ = two_tenants
    assert not entitlement(org_a, "sso").allowed
    client = _admin(org_a)
    html = _page(client)
    assert "plan doesn't include single sign-on" in html
    assert "<form" not in html.split('id="main"')[1].split("</main>")[0].replace('action="/accounts/logout/"', "")
    row = SsoDomain.objects.create(organization=org_a, domain="acme.test", verification_token="t" * 32)
    # Left from before a downgrade: shown nowhere, changed by nobody until the plan includes SSO again.
    IdentityProvider.objects.create(organization=org_a, entity_id="https://idp.test", sso_url="https://idp.test/sso")
    posts = {
        "/settings/sso/": {"metadata_xml": TestIdp("free").metadata_xml(), "default_role": "viewer"},
        "/settings/sso/identity-provider/delete/": {},
        "/settings/sso/domains/": {"domain": "other.test"},
        f"/settings/sso/domains/{row.pk}/verify/": {},
        f"/settings/sso/domains/{row.pk}/remove/": {},
        f"/settings/sso/domains/{row.pk}/require/": {"required": "1"},
    }
    for path, data in posts.items():
        assert client.post(path, data).status_code == 403, path
    assert IdentityProvider.objects.get(organization=org_a).entity_id == "https://idp.test"
    assert list(SsoDomain.objects.filter(organization=org_a).values_list("domain", flat=True)) == ["acme.test"]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEVELOPER, Role.BILLING])
def test_roles_without_security_manage_see_no_page_and_are_refused(
    orgs: tuple[Organization, Organization], role: Role
) -> None:
    org_a, _ = orgs
    client = _client(org_a, member_make(organization=org_a, role=role))
    assert client.get("/settings/sso/").status_code == 403
    assert "Single sign-on" not in client.get("/").content.decode()
    assert client.post("/settings/sso/domains/", {"domain": "acme.test"}).status_code == 403
    assert (
        client.post(
            "/settings/sso/", {"metadata_xml": TestIdp("x").metadata_xml(), "default_role": "viewer"}
        ).status_code
        == 403
    )
    assert not SsoDomain.objects.filter(organization=org_a).exists()
    assert not IdentityProvider.objects.filter(organization=org_a).exists()


def test_signed_out_visitors_are_sent_to_sign_in(orgs: tuple[Organization, Organization]) -> None:
    response = Client(HTTP_HOST="tenant-a.localhost").get("/settings/sso/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_with_htmx_a_domain_card_is_answered_in_place(
    orgs: tuple[Organization, Organization], dns_server: RunningDnsServer
) -> None:
    org_a, _ = orgs
    client = _admin(org_a)
    client.post("/settings/sso/domains/", {"domain": "acme.test"})
    row = SsoDomain.objects.get(organization=org_a)
    missing = client.post(f"/settings/sso/domains/{row.pk}/verify/", HTTP_HX_REQUEST="true")
    assert missing.status_code == 200
    card = missing.content.decode()
    assert card.strip().startswith(f'<li class="sso-domain" id="domain-{row.pk}">') and "<html" not in card
    assert 'role="alert">No TXT record found at _cognitionos-verification.acme.test.' in card

    dns_server.txt["_cognitionos-verification.acme.test"] = [verification_record_value(row.verification_token)]
    verified = client.post(f"/settings/sso/domains/{row.pk}/verify/", HTTP_HX_REQUEST="true").content.decode()
    assert 'role="status">acme.test is verified.</p>' in verified
    assert "Require SSO<span" in verified and "Verify<span" not in verified

    removed = client.post(f"/settings/sso/domains/{row.pk}/remove/", HTTP_HX_REQUEST="true")
    assert removed.status_code == 200
    assert 'role="status">acme.test removed.</li>' in removed.content.decode()
    assert not SsoDomain.objects.filter(pk=row.pk).exists()
