"""Discovery by email ("Sign in with SSO") and the SSO requirement of a verified domain: password,
password reset and passkey sign-in refused for its addresses, sign-in through the IdP still works.
Two organizations throughout: discovery returns only the one that verified the domain."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from allauth.account.adapter import get_adapter
from allauth.account.internal.flows.login import record_authentication
from allauth.account.models import EmailAddress
from django.contrib.auth.models import AnonymousUser
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.cache import SessionStore
from django.core import mail
from django.db import connection
from django.http import HttpRequest
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.accounts.adapter import SSO_REQUIRED_MESSAGE
from apps.accounts.models import User
from apps.billing.models import Plan
from apps.rbac.models import Role
from apps.rbac.services import membership_create
from apps.sso.models import IdentityProvider, SsoDomain
from apps.sso.selectors import sso_discover, sso_required_for, sso_required_for_emails
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from cognitionos.redis import redis_client
from tests.factories import TEST_ACTOR
from tests.sso.saml_setup import SsoOrganization, sso_organization

PASSWORD = "a-long-enough-passphrase-42"


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> Iterator[None]:
    def forget() -> None:
        for key in redis_client().scan_iter(match="global:*allauth:rl:*"):
            redis_client().delete(key)

    forget()
    yield
    forget()


@pytest.fixture
def org_a(two_tenants: tuple[Organization, Organization]) -> SsoOrganization:
    """Organization A: SSO plan, corp-tenant-a.example verified, the test IdP enabled."""
    return sso_organization(two_tenants[0])


def _require(org: SsoOrganization, required: bool = True) -> None:
    SsoDomain.objects.filter(organization=org.organization, domain=org.domain).update(require_sso=required)


def _person(email: str, *, organization: Organization | None = None, also: str = "") -> User:
    user = User.objects.create_user(email=email, password=PASSWORD)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    if also:
        EmailAddress.objects.create(user=user, email=also, verified=True, primary=False)
    if organization is not None:
        membership_create(user=user, organization=organization, role=Role.DEVELOPER, actor=TEST_ACTOR)
        tenant_connection().set_schema_to_public()
    return user


# --- selectors -----------------------------------------------------------------------------------


def test_discovery_finds_the_organization_that_verified_the_domain_only(
    org_a: SsoOrganization, two_tenants: tuple[Organization, Organization]
) -> None:
    _, org_b = two_tenants
    # B claims the same domain (not verifiable: A holds it) and has an enabled IdP of its own.
    sso_b = sso_organization(org_b, domain="corp-tenant-b.example")
    SsoDomain.objects.create(organization=org_b, domain=org_a.domain, verification_token="b" * 32)

    found = sso_discover(email=f"Alice@{org_a.domain.upper()}")
    assert found is not None and found.organization_id == org_a.organization.pk
    found_b = sso_discover(email=f"bob@{sso_b.domain}")
    assert found_b is not None and found_b.organization_id == org_b.pk
    assert sso_discover(email="alice@gmail.com") is None
    assert sso_discover(email=f"alice@eu.{org_a.domain}") is None  # exactly the verified domain
    assert sso_discover(email="not an address") is None


def test_discovery_ignores_unverified_domains_disabled_idps_and_plans_without_sso(org_a: SsoOrganization) -> None:
    email = f"alice@{org_a.domain}"
    SsoDomain.objects.filter(domain=org_a.domain).update(verified_at=None)
    assert sso_discover(email=email) is None
    SsoDomain.objects.filter(domain=org_a.domain).update(verified_at=timezone.now())
    IdentityProvider.objects.filter(organization=org_a.organization).update(enabled=False)
    assert sso_discover(email=email) is None
    IdentityProvider.objects.filter(organization=org_a.organization).update(enabled=True)
    assert sso_discover(email=email) is not None
    org_a.organization.plan = Plan.objects.get(code="free")
    org_a.organization.save(update_fields=["plan"])
    assert sso_discover(email=email) is None


def test_required_only_where_the_domain_requires_it_and_the_idp_can_be_used(org_a: SsoOrganization) -> None:
    email = f"alice@{org_a.domain}"
    assert sso_required_for(email=email) is None
    _require(org_a)
    required = sso_required_for(email=email)
    assert required is not None and required.organization_id == org_a.organization.pk
    # A disabled IdP would lock the whole domain out: the requirement lapses with it.
    IdentityProvider.objects.filter(organization=org_a.organization).update(enabled=False)
    assert sso_required_for(email=email) is None


# --- "Sign in with SSO" ----------------------------------------------------------------------------


def test_the_sign_in_page_offers_sso(db: None) -> None:
    page = Client(HTTP_HOST="localhost").get("/accounts/login/")
    assert page.status_code == 200
    assert 'href="/accounts/sso/"' in page.content.decode()
    assert "Sign in with SSO" in page.content.decode()


@pytest.mark.parametrize(
    ("host", "origin"),
    [("localhost", "http://tenant-a.localhost"), ("localhost:8000", "http://tenant-a.localhost:8000")],
)
def test_an_address_in_a_verified_domain_goes_to_its_organizations_sign_in(
    org_a: SsoOrganization, host: str, origin: str
) -> None:
    client = Client(HTTP_HOST=host)
    form = client.get("/accounts/sso/?email=alice@x.example")
    assert form.status_code == 200
    assert 'value="alice@x.example"' in form.content.decode()
    response = client.post("/accounts/sso/", {"email": f"alice@{org_a.domain}"})
    assert response.status_code == 302
    assert response["Location"] == f"{origin}/accounts/saml/tenant-a/login/"


def test_from_another_organizations_host_it_still_goes_to_the_verifying_organization(
    org_a: SsoOrganization, two_tenants: tuple[Organization, Organization]
) -> None:
    response = Client(HTTP_HOST="tenant-b.localhost").post("/accounts/sso/", {"email": f"alice@{org_a.domain}"})
    assert response["Location"] == "http://tenant-a.localhost/accounts/saml/tenant-a/login/"


def test_an_address_without_sso_is_told_so_without_naming_organizations(
    org_a: SsoOrganization, two_tenants: tuple[Organization, Organization]
) -> None:
    # B claimed this domain but never verified it: nothing is revealed about B.
    SsoDomain.objects.create(organization=two_tenants[1], domain="claimed.example", verification_token="c" * 32)
    response = Client(HTTP_HOST="localhost").post("/accounts/sso/", {"email": "carol@claimed.example"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Single sign-on isn&#x27;t set up for claimed.example addresses" in html
    assert "Tenant B" not in html and "tenant-b" not in html and "Tenant A" not in html


def test_a_malformed_address_is_a_form_error(db: None) -> None:
    response = Client(HTTP_HOST="localhost").post("/accounts/sso/", {"email": "no-at-sign"})
    assert response.status_code == 400
    assert "Enter a valid email address." in response.content.decode()


def test_discovery_is_rate_limited_per_client(org_a: SsoOrganization) -> None:
    client = Client(HTTP_HOST="localhost")
    statuses = [client.post("/accounts/sso/", {"email": "x@nowhere.example"}).status_code for _ in range(31)]
    assert statuses[:30] == [200] * 30  # allauth's "login" rate: 30/m/ip
    assert statuses[30] == 429


def test_an_organizations_host_offers_its_own_idp(org_a: SsoOrganization) -> None:
    page = Client(HTTP_HOST="tenant-a.localhost").get("/accounts/sso/")
    assert "Continue to Tenant A's identity provider" in page.content.decode()
    assert 'href="http://tenant-a.localhost/accounts/saml/tenant-a/login/"' in page.content.decode()
    signed_out_home = Client(HTTP_HOST="tenant-a.localhost").get("/")
    assert 'href="/accounts/sso/"' in signed_out_home.content.decode()


# --- Requiring SSO ---------------------------------------------------------------------------------


def test_password_sign_in_is_refused_for_an_address_whose_domain_requires_sso(org_a: SsoOrganization) -> None:
    email = f"alice@{org_a.domain}"
    _person(email, organization=org_a.organization)
    client = Client(HTTP_HOST="localhost")
    assert client.post("/accounts/login/", {"login": email, "password": PASSWORD}).status_code == 302  # not yet
    client = Client(HTTP_HOST="localhost")
    _require(org_a)
    refused = client.post("/accounts/login/", {"login": email, "password": PASSWORD})
    assert refused.status_code == 200
    assert "requires single sign-on for this address" in refused.content.decode()
    assert "_auth_user_id" not in client.session


def test_another_address_of_the_same_person_does_not_get_around_it(org_a: SsoOrganization) -> None:
    _person("alice@home.example", organization=org_a.organization, also=f"alice@{org_a.domain}")
    _require(org_a)
    client = Client(HTTP_HOST="localhost")
    response = client.post("/accounts/login/", {"login": "alice@home.example", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/accounts/sso/"
    assert "_auth_user_id" not in client.session
    followed = client.get(response["Location"])
    assert SSO_REQUIRED_MESSAGE.replace("“", "").split(":")[0] in followed.content.decode()


def test_password_reset_is_refused_and_no_mail_is_sent(org_a: SsoOrganization) -> None:
    email = f"alice@{org_a.domain}"
    _person(email, organization=org_a.organization)
    _require(org_a)
    mail.outbox.clear()
    response = Client(HTTP_HOST="localhost").post("/accounts/password/reset/", {"email": email})
    assert response.status_code == 200
    assert "requires single sign-on for this address" in response.content.decode()
    assert not mail.outbox
    # Another domain's reset works as before.
    _person("bob@elsewhere.example")
    assert (
        Client(HTTP_HOST="localhost").post("/accounts/password/reset/", {"email": "bob@elsewhere.example"}).status_code
        == 302
    )
    assert mail.outbox


def _hook_request(host: str = "localhost") -> HttpRequest:
    request = RequestFactory().post("/accounts/login/", HTTP_HOST=host)
    request.session = SessionStore()
    request._messages = FallbackStorage(request)  # type: ignore[attr-defined]
    request.user = AnonymousUser()
    return request


def test_passkey_sign_in_is_refused_for_such_an_address(org_a: SsoOrganization) -> None:
    # What allauth's passkey sign-in does before asking the adapter: record a passwordless WebAuthn
    # authentication, then pre_login (allauth.mfa.webauthn.internal.flows.perform_passwordless_login).
    user = _person(f"alice@{org_a.domain}", organization=org_a.organization)
    _require(org_a)
    request = _hook_request()
    record_authentication(request, user, "mfa", type="webauthn", passwordless=True)
    response = get_adapter(request).pre_login(
        request, user, email_verification="mandatory", signal_kwargs=None, email=None, signup=False, redirect_url=None
    )
    assert response is not None and response.status_code == 302 and response["Location"] == "/accounts/sso/"
    # Without the requirement the same sign-in goes on.
    _require(org_a, required=False)
    request = _hook_request()
    record_authentication(request, user, "mfa", type="webauthn", passwordless=True)
    assert (
        get_adapter(request).pre_login(
            request,
            user,
            email_verification="mandatory",
            signal_kwargs=None,
            email=None,
            signup=False,
            redirect_url=None,
        )
        is None
    )


def test_sign_in_through_the_organizations_idp_still_works_when_required(org_a: SsoOrganization) -> None:
    email = f"alice@{org_a.domain}"
    _person(email, organization=org_a.organization)
    _require(org_a)
    organization_cache_forget()
    request_id = org_a.start_sign_in()
    response = org_a.post(org_a.idp.response(org_a.spec(email, in_response_to=request_id)))
    assert response.status_code == 302, response.content[:400]
    assert response["Location"] != "/accounts/sso/"
    assert org_a.client.session.get("_auth_user_id") == str(User.objects.get(email=email).pk)


def test_sign_up_with_an_address_whose_domain_requires_sso_is_refused(org_a: SsoOrganization) -> None:
    _require(org_a)
    email = f"newcomer@{org_a.domain}"
    response = Client(HTTP_HOST="localhost").post(
        "/accounts/signup/",
        {
            "email": email,
            "password1": PASSWORD,
            "password2": PASSWORD,
            "organization_name": "Side Project",
            "organization_slug": "side-project-sso",
        },
    )
    assert response.status_code == 200
    assert "requires single sign-on for this address" in response.content.decode()
    assert not User.objects.filter(email=email).exists()
    assert not Organization.objects.filter(slug="side-project-sso").exists()


def test_discovery_and_the_requirement_cost_one_query_each(org_a: SsoOrganization) -> None:
    _require(org_a)
    emails = [f"alice@{org_a.domain}", "alice@home.example", "alice@work.example"]
    with CaptureQueriesContext(connection) as discovered:
        assert sso_discover(email=emails[0]) is not None
    with CaptureQueriesContext(connection) as required:
        assert sso_required_for_emails(emails=emails) is not None
    for counted in (discovered, required):
        assert len([q for q in counted.captured_queries if q["sql"].startswith("SELECT")]) == 1
