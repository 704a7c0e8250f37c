"""SAML sign-in through the ACS with real signed responses (tests/sso/idp.py): what signs in, and
everything that is refused — each refusal audited with its reason, and shown as a page that echoes
nothing of the response."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from typing import Any

import lxml.etree
import pytest
import redis
import xmlsec
from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount
from django.test import Client

from apps.accounts.models import User
from apps.billing.models import Plan
from apps.rbac.models import Membership, Role
from apps.tenants.models import Organization
from tests.factories import member_make, plan_make
from tests.sso.idp import (
    TestIdp,
    assertion_of,
    key_pair,
    tampered,
    xsw_moved_into_extensions,
    xsw_second_assertion,
    xsw_signature_points_elsewhere,
)
from tests.sso.saml_setup import SsoOrganization, plan_set, sso_counters_forget, sso_organization

PASSWORD = "a-long-enough-passphrase-42"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@pytest.fixture(autouse=True)
def _fresh_counters() -> Iterator[None]:
    sso_counters_forget()
    yield
    sso_counters_forget()


@pytest.fixture
def org_a(two_tenants: tuple[Organization, Organization]) -> SsoOrganization:
    return sso_organization(two_tenants[0])


@pytest.fixture
def org_a_idp_initiated(two_tenants: tuple[Organization, Organization]) -> SsoOrganization:
    return sso_organization(two_tenants[0], allow_idp_initiated=True)


def _signed_in_as(client: Client) -> str | None:
    """Who the organization's host thinks this browser is (the portal home answers members)."""
    response = client.get("/")
    if response.status_code != 200 or b"Sign in to" in response.content:
        return None
    user = response.wsgi_request.user
    return str(user.email) if user.is_authenticated else None


def _assert_refused(org: SsoOrganization, response: object, reason: str, status: int = 400) -> None:
    assert getattr(response, "status_code", None) == status, getattr(response, "content", b"")[:400]
    content = response.content.decode()  # type: ignore[attr-defined]
    assert "Single sign-on didn&#x27;t work" in content or "Single sign-on didn't work" in content
    assert reason in content  # the reference for the administrator
    # Nothing of the response (XML, python3-saml's words) and no traceback in the page.
    assert "<saml" not in content and "samlp:" not in content and "Traceback" not in content
    assert org.refused_reason() == reason


def test_xmlsec_imports_with_lxml_on_the_same_libxml2() -> None:
    # python3-saml #411/#440: wheels built against different libxml2 fail at import or sign badly.
    assert xmlsec.get_libxml_version() == lxml.etree.LIBXML_VERSION


# --- What signs in -----------------------------------------------------------------------------


def test_sp_initiated_sign_in_creates_the_member_just_in_time(org_a: SsoOrganization) -> None:
    request_id = org_a.start_sign_in()
    response = org_a.post(org_a.idp.response(org_a.spec(in_response_to=request_id)))

    assert response.status_code == 302
    email = f"alice@{org_a.domain}"
    assert _signed_in_as(org_a.client) == email
    user = User.objects.get(email=email)
    assert not user.has_usable_password()
    assert EmailAddress.objects.get(user=user).verified
    membership = Membership.objects.get(user=user, organization=org_a.organization)
    assert membership.role == Role.VIEWER  # the IdP's default role
    assert SocialAccount.objects.get(user=user).provider == f"saml:{org_a.slug}"
    event = org_a.last_event("sso.login")
    assert event is not None
    assert event.metadata["email"] == email and event.metadata["membership_created"] is True
    assert event.metadata["idp"] == org_a.idp.entity_id
    assert org_a.last_event("membership.created") is not None
    assert org_a.last_event("sso.login_refused") is None


def test_opening_the_sign_in_link_asks_before_going_to_the_idp(org_a: SsoOrganization) -> None:
    # A GET (a link, a redirect from discovery) shows a button; only its POST goes to the IdP.
    response = org_a.client.get(f"/accounts/saml/{org_a.slug}/login/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "Continue to your identity provider" in body and 'method="post"' in body
    assert org_a.idp.sso_url not in body


def test_an_existing_member_signs_in_and_keeps_their_role(org_a: SsoOrganization) -> None:
    email = f"dev@{org_a.domain}"
    user = member_make(organization=org_a.organization, role=Role.DEVELOPER, email=email)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    request_id = org_a.start_sign_in()
    org_a.post(org_a.idp.response(org_a.spec(email, in_response_to=request_id)))

    assert _signed_in_as(org_a.client) == email
    assert Membership.objects.get(user=user, organization=org_a.organization).role == Role.DEVELOPER
    event = org_a.last_event("sso.login")
    assert event is not None and event.metadata["membership_created"] is False


def test_an_unverified_account_with_the_address_loses_its_password(org_a: SsoOrganization) -> None:
    # Someone signed up with the address but never proved it: the IdP's answer does, and the
    # squatter's password stops working.
    email = f"bob@{org_a.domain}"
    squatter = User.objects.create_user(email=email, password=PASSWORD)
    EmailAddress.objects.create(user=squatter, email=email, verified=False, primary=True)
    request_id = org_a.start_sign_in()
    org_a.post(org_a.idp.response(org_a.spec(email, in_response_to=request_id)))

    squatter.refresh_from_db()
    assert not squatter.has_usable_password()
    assert EmailAddress.objects.get(user=squatter, email=email).verified
    assert _signed_in_as(org_a.client) == email


def test_idp_initiated_is_refused_unless_the_organization_allows_it(org_a: SsoOrganization) -> None:
    response = org_a.post(org_a.idp.response(org_a.spec()))
    _assert_refused(org_a, response, "idp_initiated_disabled", status=403)
    assert _signed_in_as(org_a.client) is None

    row = org_a.row()
    row.allow_idp_initiated = True
    row.save()
    response = org_a.post(org_a.idp.response(org_a.spec()))
    assert response.status_code == 302
    assert _signed_in_as(org_a.client) == f"alice@{org_a.domain}"


def test_sign_in_lands_on_the_page_asked_for(org_a: SsoOrganization) -> None:
    request_id = org_a.start_sign_in(next_path="/members/")
    response = org_a.post(org_a.idp.response(org_a.spec(in_response_to=request_id)))
    assert response.status_code == 302 and response["Location"] == "/members/"


@pytest.mark.parametrize(
    "relay_state",
    ["https://evil.example/steal", "//evil.example/", "http://tenant-b.localhost/", "javascript:alert(1)", "/\\evil"],
)
def test_relay_state_to_a_foreign_host_is_ignored(org_a_idp_initiated: SsoOrganization, relay_state: str) -> None:
    org = org_a_idp_initiated
    response = org.post(org.idp.response(org.spec()), relay_state=relay_state)
    assert response.status_code == 302
    assert response["Location"] == "/enter/"  # the organization's own landing, on this host
    assert _signed_in_as(org.client) == f"alice@{org.domain}"


def test_relay_state_to_a_path_here_is_followed(org_a_idp_initiated: SsoOrganization) -> None:
    org = org_a_idp_initiated
    response = org.post(org.idp.response(org.spec()), relay_state=f"http://{org.host}/keys/?x=1")
    assert response.status_code == 302 and response["Location"] == "/keys/?x=1"


# --- What is refused ----------------------------------------------------------------------------


def test_unsigned_response_is_refused(org_a_idp_initiated: SsoOrganization) -> None:
    org = org_a_idp_initiated
    _assert_refused(org, org.post(org.idp.response(org.spec(), sign="none")), "unsigned")
    assert not User.objects.filter(email=f"alice@{org.domain}").exists()


def test_signed_response_with_unsigned_assertion_is_refused(org_a_idp_initiated: SsoOrganization) -> None:
    org = org_a_idp_initiated
    _assert_refused(org, org.post(org.idp.response(org.spec(), sign="response")), "unsigned")


def test_response_signed_by_another_key_is_refused(org_a_idp_initiated: SsoOrganization) -> None:
    org = org_a_idp_initiated
    tree = org.idp.response(org.spec(), keys=key_pair("attacker"))
    _assert_refused(org, org.post(tree), "bad_signature")


def test_sha1_signature_is_refused(org_a_idp_initiated: SsoOrganization) -> None:
    org = org_a_idp_initiated
    _assert_refused(org, org.post(org.idp.response(org.spec(), algorithm="sha1")), "deprecated_algorithm")


def test_expired_assertion_is_refused(org_a_idp_initiated: SsoOrganization) -> None:
    org = org_a_idp_initiated
    past = _now() - datetime.timedelta(minutes=10)
    spec = org.spec(not_before=past - datetime.timedelta(minutes=5), not_on_or_after=past, subject_not_on_or_after=past)
    _assert_refused(org, org.post(org.idp.response(spec)), "expired")


def test_assertion_not_yet_valid_is_refused(org_a_idp_initiated: SsoOrganization) -> None:
    org = org_a_idp_initiated
    spec = org.spec(
        not_before=_now() + datetime.timedelta(hours=1), not_on_or_after=_now() + datetime.timedelta(hours=2)
    )
    _assert_refused(org, org.post(org.idp.response(spec)), "not_yet_valid")


def test_wrong_audience_is_refused(org_a_idp_initiated: SsoOrganization) -> None:
    org = org_a_idp_initiated
    spec = org.spec(audience="https://another-sp.example/metadata")
    _assert_refused(org, org.post(org.idp.response(spec)), "audience")


def test_wrong_destination_is_refused(org_a_idp_initiated: SsoOrganization) -> None:
    org = org_a_idp_initiated
    spec = org.spec(destination="https://another-sp.example/acs")
    _assert_refused(org, org.post(org.idp.response(spec)), "destination")


def test_wrong_recipient_is_refused(org_a_idp_initiated: SsoOrganization) -> None:
    org = org_a_idp_initiated
    spec = org.spec(recipient="https://another-sp.example/acs")
    _assert_refused(org, org.post(org.idp.response(spec)), "recipient")


def test_assertion_from_another_issuer_is_refused(org_a_idp_initiated: SsoOrganization) -> None:
    org = org_a_idp_initiated
    spec = org.spec(issuer="https://somebody-else.example/idp")
    _assert_refused(org, org.post(org.idp.response(spec)), "issuer")


def test_a_replayed_assertion_is_refused(org_a: SsoOrganization) -> None:
    request_id = org_a.start_sign_in()
    tree = org_a.idp.response(org_a.spec(in_response_to=request_id))
    assert org_a.post(tree).status_code == 302

    # The same response again, from another browser that started a sign-in of its own.
    other = Client(HTTP_HOST=org_a.host)
    org_a.start_sign_in(client=other)
    _assert_refused(org_a, org_a.post(tree, client=other), "replayed")
    assert _signed_in_as(other) is None


def test_a_response_to_a_request_this_browser_did_not_make_is_refused(org_a: SsoOrganization) -> None:
    # An unsolicited response can't pass for SP-initiated by naming a made-up request.
    tree = org_a.idp.response(org_a.spec(in_response_to="_made_up_request_id"))
    _assert_refused(org_a, org_a.post(tree), "unknown_request")


XSW: list[tuple[str, Callable[..., lxml.etree._Element], str]] = [
    ("second assertion before the signed one", xsw_second_assertion, "wrapped"),
    ("signed assertion moved into Extensions", xsw_moved_into_extensions, "wrapped"),
    ("signature pointing at a hidden original", xsw_signature_points_elsewhere, "wrapped"),
    ("subject changed after signing", tampered, "bad_signature"),
]


@pytest.mark.parametrize(("label", "wrap", "reason"), XSW, ids=[label for label, _, _ in XSW])
def test_signature_wrapping_is_refused(
    org_a_idp_initiated: SsoOrganization, label: str, wrap: Callable[..., lxml.etree._Element], reason: str
) -> None:
    org = org_a_idp_initiated
    evil_email = f"mallory@{org.domain}"
    signed = org.idp.response(org.spec(f"alice@{org.domain}"))
    response = org.post(wrap(signed, evil_email=evil_email))
    _assert_refused(org, response, reason)
    assert evil_email not in response.content.decode()
    assert not User.objects.filter(email__in=[evil_email, f"alice@{org.domain}"]).exists()


def test_response_and_assertion_both_signed_signs_in(org_a_idp_initiated: SsoOrganization) -> None:
    org = org_a_idp_initiated
    assert org.post(org.idp.response(org.spec(), sign="both")).status_code == 302
    assert _signed_in_as(org.client) == f"alice@{org.domain}"


def test_an_address_outside_the_verified_domains_is_refused(org_a_idp_initiated: SsoOrganization) -> None:
    org = org_a_idp_initiated
    response = org.post(org.idp.response(org.spec("eve@unverified.example")))
    _assert_refused(org, response, "domain_not_verified", status=403)
    assert not User.objects.filter(email="eve@unverified.example").exists()


def test_a_subdomain_of_a_verified_domain_is_not_vouched_for(org_a_idp_initiated: SsoOrganization) -> None:
    org = org_a_idp_initiated
    response = org.post(org.idp.response(org.spec(f"eve@eu.{org.domain}")))
    _assert_refused(org, response, "domain_not_verified", status=403)


def test_a_domain_claimed_but_not_verified_is_refused(org_a_idp_initiated: SsoOrganization) -> None:
    from apps.sso.models import SsoDomain

    org = org_a_idp_initiated
    SsoDomain.objects.create(organization=org.organization, domain="pending.example", verification_token="p" * 32)
    response = org.post(org.idp.response(org.spec("eve@pending.example")))
    _assert_refused(org, response, "domain_not_verified", status=403)


def test_a_plan_without_sso_refuses_the_sign_in(org_a: SsoOrganization) -> None:
    request_id = org_a.start_sign_in()
    free = Plan.objects.get(code="free")
    plan_set(org_a.organization, free)

    login_page = org_a.client.post(f"/accounts/saml/{org_a.slug}/login/")
    assert login_page.status_code == 403 and b"plan doesn" in login_page.content
    response = org_a.post(org_a.idp.response(org_a.spec(in_response_to=request_id)))
    _assert_refused(org_a, response, "plan_without_sso", status=403)
    assert _signed_in_as(org_a.client) is None


def test_a_disabled_idp_refuses_the_sign_in(org_a_idp_initiated: SsoOrganization) -> None:
    org = org_a_idp_initiated
    row = org.row()
    row.enabled = False
    row.save()
    _assert_refused(org, org.post(org.idp.response(org.spec())), "sso_disabled", status=403)


def test_a_response_larger_than_the_bound_is_refused_before_parsing(org_a_idp_initiated: SsoOrganization) -> None:
    org = org_a_idp_initiated
    response = org.post("A" * (256 * 1024 + 10))
    _assert_refused(org, response, "too_large", status=413)


def test_a_flood_of_refusals_is_audited_up_to_the_bound(org_a_idp_initiated: SsoOrganization, settings: Any) -> None:
    org = org_a_idp_initiated
    settings.SSO_REFUSALS_AUDITED_PER_MINUTE = 3
    for _ in range(5):
        assert org.post("bm90IFhNTA==").status_code == 400  # every one refused...
    assert len(org.events("sso.login_refused")) == 3  # ...the first three audited this minute


def test_without_the_replay_cache_sign_in_fails_closed(
    org_a_idp_initiated: SsoOrganization, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = org_a_idp_initiated
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    monkeypatch.setattr("apps.sso.saml.redis_client", lambda: unreachable)
    response = org.post(org.idp.response(org.spec()))
    _assert_refused(org, response, "unavailable", status=503)
    assert _signed_in_as(org.client) is None


def test_garbage_is_refused_as_malformed(org_a_idp_initiated: SsoOrganization) -> None:
    org = org_a_idp_initiated
    _assert_refused(org, org.post("bm90IFhNTA=="), "malformed")  # base64 of "not XML"


def test_the_plan_member_limit_holds_for_just_in_time_members(org_a_idp_initiated: SsoOrganization) -> None:
    org = org_a_idp_initiated
    plan = plan_make(code="sso-tiny", name="SSO tiny", sso=True, max_members=1)
    plan_set(org.organization, plan)  # the owner is the one member
    response = org.post(org.idp.response(org.spec()))
    _assert_refused(org, response, "plan_limit_members", status=403)
    assert not Membership.objects.filter(organization=org.organization, user__email=f"alice@{org.domain}").exists()


def test_sso_sign_in_still_needs_our_second_factor_where_required(org_a_idp_initiated: SsoOrganization) -> None:
    # docs/sso.md: the IdP's sign-in does not stand in for the organization's MFA requirement.
    org = org_a_idp_initiated
    org.organization.mfa_required = True
    org.organization.save(update_fields=["mfa_required"])
    from apps.tenants.selectors import organization_cache_forget

    organization_cache_forget()
    assert org.post(org.idp.response(org.spec())).status_code == 302
    home = org.client.get("/")
    assert home.status_code == 302 and "/accounts/2fa/totp/activate/" in home["Location"]


# --- Two organizations --------------------------------------------------------------------------


def test_a_response_for_organization_a_cannot_sign_in_to_organization_b(
    two_tenants: tuple[Organization, Organization],
) -> None:
    tenant_a, tenant_b = two_tenants
    org_a = sso_organization(tenant_a, allow_idp_initiated=True)
    # B even trusts the very same IdP (same entity id, same key) and the same domain name is
    # verified nowhere else: the audience and destination still tie A's response to A.
    org_b = sso_organization(tenant_b, idp=TestIdp(tenant_a.slug), domain="corp-b.example", allow_idp_initiated=True)
    tree = org_a.idp.response(org_a.spec())

    response = org_b.post(tree)
    assert response.status_code == 400
    assert org_b.refused_reason() in ("audience", "destination")
    assert org_a.last_event("sso.login_refused") is None  # recorded in B's log only
    assert _signed_in_as(org_b.client) is None

    # A's slug on B's host is not a route at all.
    foreign = org_b.client.post(f"/accounts/saml/{org_a.slug}/acs/", {"SAMLResponse": "x"})
    assert foreign.status_code == 404
    # And A's own response still works on A (it was not burnt by B's refusal).
    assert org_a.post(tree).status_code == 302
    assert _signed_in_as(org_a.client) == f"alice@{org_a.domain}"
    assert not Membership.objects.filter(organization=tenant_b, user__email=f"alice@{org_a.domain}").exists()


def test_organization_b_idp_cannot_sign_in_organization_a_addresses(
    two_tenants: tuple[Organization, Organization],
) -> None:
    tenant_a, tenant_b = two_tenants
    org_a = sso_organization(tenant_a)
    org_b = sso_organization(tenant_b, allow_idp_initiated=True)
    # B's IdP asserts an address in A's verified domain, in a response made for B.
    response = org_b.post(org_b.idp.response(org_b.spec(f"ceo@{org_a.domain}")))
    _assert_refused(org_b, response, "domain_not_verified", status=403)


def test_no_saml_on_the_platform_host(org_a: SsoOrganization) -> None:
    platform = Client(HTTP_HOST="localhost")
    assert platform.get(f"/accounts/saml/{org_a.slug}/metadata/").status_code == 404
    assert platform.post(f"/accounts/saml/{org_a.slug}/acs/", {"SAMLResponse": "x"}).status_code == 404


def test_sp_metadata_names_the_organization_host(org_a: SsoOrganization) -> None:
    response = org_a.client.get(f"/accounts/saml/{org_a.slug}/metadata/", {"download": "1"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/xml")
    assert "attachment" in response["Content-Disposition"]
    body = response.content.decode()
    assert f'entityID="{org_a.sp_entity_id}"' in body
    assert f'Location="{org_a.acs_url}"' in body
    assert 'WantAssertionsSigned="true"' in body
    assert "SingleLogoutService" not in body  # not offered, so not advertised


def test_assertion_of_helper_finds_the_signed_assertion(org_a: SsoOrganization) -> None:
    tree = org_a.idp.response(org_a.spec())
    assert assertion_of(tree).find("{http://www.w3.org/2000/09/xmldsig#}Signature") is not None
