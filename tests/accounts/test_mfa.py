"""Second factors (allauth.mfa) and an organization's "require MFA for all members", through HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value
from django.test import Client

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.audit.models import AuditEvent
from apps.rbac.models import Role
from apps.rbac.services import membership_create
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from apps.tenants.services import OrganizationChangeRefused, organization_mfa_require_set
from cognitionos.redis import redis_client
from tests.portal.handover_support import handover_form, handover_post, token_for

PASSWORD = "a-long-enough-passphrase-42"
SYSTEM = Principal.system("tests")
ClientFor = Callable[[str], Client]


@pytest.fixture
def client_for() -> ClientFor:
    def make(host: str) -> Client:
        return Client(HTTP_HOST=host)

    return make


@pytest.fixture(autouse=True)
def _fresh_counters() -> Iterator[None]:
    """allauth's rate-limit counters and used-TOTP-code records live in the shared Redis."""

    def forget() -> None:
        client = redis_client()
        for pattern in ("global:*allauth:rl:*", "global:*allauth.mfa.totp.used*"):
            for key in client.scan_iter(match=pattern):
                client.delete(key)

    forget()
    yield
    forget()


def _member(email: str, *organizations: Organization, role: Role = Role.DEVELOPER) -> User:
    user = User.objects.create_user(email=email, password=PASSWORD)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    for organization in organizations:
        membership_create(user=user, organization=organization, role=role, actor=SYSTEM)
    tenant_connection().set_schema_to_public()
    return user


def _code(secret: str) -> str:
    return str(format_hotp_value(hotp_value(secret, int(time.time()) // 30)))


def _with_totp(user: User) -> str:
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    return str(secret)


def _require_mfa(organization: Organization, required: bool = True) -> None:
    organization_mfa_require_set(organization=organization, required=required, actor=SYSTEM)
    # The test's transaction never commits, so the service's on-commit forgetting doesn't run.
    organization_cache_forget()


def _actions(organization: Organization) -> list[str]:
    with organization_schema(organization):
        return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


def _password_step(client: Client, email: str) -> str:
    response = client.post("/accounts/login/", {"login": email, "password": PASSWORD})
    assert response.status_code == 302
    return str(response["Location"])


def _signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_totp_set_up_then_sign_in_asks_for_the_code(
    two_tenants: tuple[Organization, Organization],
    client_for: ClientFor,
    django_capture_on_commit_callbacks: Callable[..., AbstractContextManager[object]],
) -> None:
    tenant_a, _tenant_b = two_tenants
    user = _member("totp@mfa.example", tenant_a)
    client = client_for("tenant-a.localhost")
    assert _password_step(client, user.email) == "/enter/"  # no second factor yet: straight in

    # allauth asks for the password again before a second factor is added.
    asked = client.get("/accounts/2fa/totp/activate/")
    assert asked.status_code == 302 and urlsplit(asked["Location"]).path == "/accounts/reauthenticate/"
    confirmed = client.post(asked["Location"], {"password": PASSWORD})
    assert confirmed.status_code == 302 and confirmed["Location"] == "/accounts/2fa/totp/activate/"
    # The set-up page is the portal's, with the secret allauth keeps in the session.
    page = client.get("/accounts/2fa/totp/activate/")
    assert page.status_code == 200
    assert b'class="topbar"' in page.content and b"Skip to content" in page.content
    secret = client.session["mfa.totp.secret"]
    assert (
        client.post(
            "/accounts/2fa/totp/activate/", {"code": "000000" if _code(secret) != "000000" else "111111"}
        ).status_code
        == 200
    )
    assert not Authenticator.objects.filter(user=user).exists()
    with django_capture_on_commit_callbacks(execute=True):  # allauth signals the addition on commit
        activated = client.post("/accounts/2fa/totp/activate/", {"code": _code(secret)})
    assert activated.status_code == 302
    assert set(Authenticator.objects.filter(user=user).values_list("type", flat=True)) == {"totp", "recovery_codes"}

    client.post("/accounts/logout/")
    assert not _signed_in(client)
    assert _password_step(client, user.email) == "/accounts/2fa/authenticate/"
    assert not _signed_in(client)  # the password alone is not a sign-in any more
    wrong = client.post("/accounts/2fa/authenticate/", {"code": "12345"})
    assert wrong.status_code == 200 and b"Incorrect code" in wrong.content
    assert not _signed_in(client)
    right = client.post("/accounts/2fa/authenticate/", {"code": _code(secret)})
    assert right.status_code == 302 and _signed_in(client)
    assert client.get("/").status_code == 200

    actions = _actions(tenant_a)
    assert actions.count("account.mfa_activated") == 2  # the app and its recovery codes
    assert actions.count("account.signed_in") == 2
    assert "account.mfa_failed" in actions


def test_a_totp_code_is_accepted_once_across_hosts(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, tenant_b = two_tenants
    user = _member("replay@mfa.example", tenant_a, tenant_b)
    secret = _with_totp(user)
    code = _code(secret)
    first, second = client_for("tenant-a.localhost"), client_for("tenant-b.localhost")
    _password_step(first, user.email)
    _password_step(second, user.email)
    assert first.post("/accounts/2fa/authenticate/", {"code": code}).status_code == 302
    replay = second.post("/accounts/2fa/authenticate/", {"code": code})
    assert replay.status_code == 200 and not _signed_in(second)


def test_a_recovery_code_works_once(db: None, client_for: ClientFor) -> None:
    user = _member("recovery@mfa.example")
    _with_totp(user)
    recovery = RecoveryCodes.activate(user)
    code = recovery.get_unused_codes()[0]
    client = client_for("localhost")
    assert _password_step(client, user.email) == "/accounts/2fa/authenticate/"
    assert client.post("/accounts/2fa/authenticate/", {"code": code}).status_code == 302
    assert _signed_in(client)
    client.post("/accounts/logout/")

    again = client_for("localhost")
    _password_step(again, user.email)
    refused = again.post("/accounts/2fa/authenticate/", {"code": code})
    assert refused.status_code == 200 and not _signed_in(again)


def test_guessing_the_second_factor_is_rate_limited(db: None, client_for: ClientFor) -> None:
    user = _member("guess@mfa.example")
    secret = _with_totp(user)
    client = client_for("localhost")
    _password_step(client, user.email)
    wrong = "000000" if _code(secret) != "000000" else "111111"
    for _attempt in range(5):
        assert b"Incorrect code" in client.post("/accounts/2fa/authenticate/", {"code": wrong}).content
    # The sixth try within five minutes is refused before the code is looked at: even the right one.
    limited = client.post("/accounts/2fa/authenticate/", {"code": _code(secret)})
    assert limited.status_code == 200 and not _signed_in(client)
    assert b"Too many failed login attempts" in limited.content


PORTAL_PAGES = ["/", "/keys/", "/members/", "/audit/", "/settings/security/"]


def test_required_mfa_sends_members_without_it_to_set_up_in_that_organization_only(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, tenant_b = two_tenants
    _require_mfa(tenant_a)
    user = _member("nofactor@mfa.example", tenant_a, tenant_b, role=Role.ADMIN)
    in_a, in_b = client_for("tenant-a.localhost"), client_for("tenant-b.localhost")
    in_a.force_login(user)
    in_b.force_login(user)

    for path in PORTAL_PAGES:
        response = in_a.get(path)
        assert response.status_code == 302, path
        assert response["Location"] == "/accounts/2fa/totp/activate/", path
    api = in_a.get("/api/v1/members")
    assert api.status_code == 403
    assert api.json()["error"]["code"] == "mfa_required"
    # The way through stays open: allauth's pages (the set-up asks for the password first), and signing out.
    setting_up = in_a.get("/accounts/2fa/totp/activate/")
    assert urlsplit(setting_up["Location"]).path == "/accounts/reauthenticate/"
    assert in_a.get(setting_up["Location"]).status_code == 200
    assert in_a.get("/accounts/2fa/").status_code == 200

    # Organization B doesn't require it: the same person works there as before.
    assert in_b.get("/").status_code == 200
    assert in_b.get("/api/v1/members").status_code == 200

    # Setting the factor up proves it: the portal opens without asking for a code a second time.
    in_a.post(setting_up["Location"], {"password": PASSWORD})
    in_a.get("/accounts/2fa/totp/activate/")
    # allauth signals the addition once its transaction commits, which in a real request is before
    # the response (and the session) is written; the test's transaction never commits, so run it at once.
    with mock.patch("allauth.mfa.totp.internal.flows.transaction.on_commit", side_effect=lambda run: run()):
        activated = in_a.post("/accounts/2fa/totp/activate/", {"code": _code(in_a.session["mfa.totp.secret"])})
    assert activated.status_code == 302
    for path in PORTAL_PAGES:
        assert in_a.get(path).status_code == 200, path
    assert in_a.get("/api/v1/members").status_code == 200
    # Both organizations' logs say so: it changes how each of them is protected.
    assert "account.mfa_activated" in _actions(tenant_a)
    assert "account.mfa_activated" in _actions(tenant_b)

    assert in_a.post("/accounts/logout/").status_code == 302
    assert not _signed_in(in_a)


def test_required_mfa_asks_a_session_made_without_the_factor_for_it(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, _tenant_b = two_tenants
    _require_mfa(tenant_a)
    user = _member("hasfactor@mfa.example", tenant_a)
    secret = _with_totp(user)
    client = client_for("tenant-a.localhost")
    client.force_login(user)  # a session that never saw the second factor

    response = client.get("/keys/")
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.path == "/accounts/2fa/reauthenticate/"
    assert parse_qs(location.query)["next"] == ["/keys/"]
    assert client.get("/api/v1/members").json()["error"]["code"] == "mfa_required"

    answered = client.post("/accounts/2fa/reauthenticate/?next=/keys/", {"code": _code(secret)})
    assert answered.status_code == 302 and answered["Location"] == "/keys/"
    assert client.get("/").status_code == 200
    assert client.get("/api/v1/members").status_code == 200


def test_a_handover_from_a_sign_in_with_mfa_satisfies_the_requirement(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, _tenant_b = two_tenants
    _require_mfa(tenant_a)
    user = _member("handover@mfa.example", tenant_a)
    secret = _with_totp(user)
    platform = client_for("localhost")
    _password_step(platform, user.email)
    entered = platform.post("/accounts/2fa/authenticate/", {"code": _code(secret)})
    assert entered.status_code == 302
    handover = handover_form(platform.get(entered["Location"]))  # /enter/: one organization, handed over
    assert handover.host.startswith("tenant-a.localhost")

    organization_client = client_for("tenant-a.localhost")
    assert handover_post(organization_client, handover.token).status_code == 302
    assert organization_client.get("/").status_code == 200
    assert "account.signed_in" in _actions(tenant_a)


def test_handover_from_a_sign_in_without_mfa_is_asked_for_it(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, _tenant_b = two_tenants
    _require_mfa(tenant_a)
    user = _member("nomfa-handover@mfa.example", tenant_a)
    _with_totp(user)
    client = client_for("tenant-a.localhost")
    assert handover_post(client, token_for(user, tenant_a)).status_code == 302
    assert urlsplit(client.get("/")["Location"]).path == "/accounts/2fa/reauthenticate/"


def test_api_keys_are_not_affected(
    two_tenants: tuple[Organization, Organization], api_client_for: Callable[[Organization], object]
) -> None:
    tenant_a, _tenant_b = two_tenants
    _require_mfa(tenant_a)
    client = api_client_for(tenant_a)
    response = client.get("/api/v1/members")  # type: ignore[attr-defined]
    assert response.status_code == 200


def test_the_security_page_and_its_toggle_need_security_manage(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, _tenant_b = two_tenants
    developer = _member("dev@security.example", tenant_a)
    client = client_for("tenant-a.localhost")
    client.force_login(developer)
    assert b"/settings/security/" not in client.get("/").content  # not offered in the navigation
    assert client.get("/settings/security/").status_code == 403
    assert client.post("/settings/security/", {"mfa_required": "on"}).status_code == 403
    tenant_connection().set_schema_to_public()
    assert not Organization.objects.get(pk=tenant_a.pk).mfa_required
    with pytest.raises(OrganizationChangeRefused):
        organization_mfa_require_set(organization=tenant_a, required=True, actor=Principal.for_user(developer))


def test_an_owner_turns_the_requirement_on_after_setting_up_their_own(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, tenant_b = two_tenants
    owner = _member("owner@security.example", tenant_a, role=Role.OWNER)
    client = client_for("tenant-a.localhost")
    client.force_login(owner)
    page = client.get("/settings/security/")
    assert page.status_code == 200
    assert b'href="/settings/security/"' in page.content  # in the navigation for this role
    assert b"Require two-factor authentication for all members" in page.content

    refused = client.post("/settings/security/", {"mfa_required": "on"})
    assert refused.status_code == 200 and b"Set up two-factor authentication for yourself first" in refused.content
    tenant_connection().set_schema_to_public()
    assert not Organization.objects.get(pk=tenant_a.pk).mfa_required

    secret = _with_totp(owner)
    # The session has to have used the factor too, once it is required; here it isn't yet.
    saved = client.post("/settings/security/", {"mfa_required": "on"})
    assert saved.status_code == 302 and saved["Location"] == "/settings/security/"
    tenant_connection().set_schema_to_public()
    assert Organization.objects.get(pk=tenant_a.pk).mfa_required
    assert not Organization.objects.get(pk=tenant_b.pk).mfa_required
    organization_cache_forget()
    # Now required: this session, made without the factor, is asked for it before anything else.
    assert urlsplit(client.get("/settings/security/")["Location"]).path == "/accounts/2fa/reauthenticate/"
    client.post("/accounts/2fa/reauthenticate/", {"code": _code(secret)})
    assert b"badge--ok" in client.get("/settings/security/").content
    assert "organization.mfa_required_changed" in _actions(tenant_a)
    assert "organization.mfa_required_changed" not in _actions(tenant_b)


def test_failed_sign_ins_are_recorded_in_the_organization_of_their_host_only(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, tenant_b = two_tenants
    user = _member("failing@mfa.example", tenant_a, tenant_b)
    client_for("tenant-a.localhost").post("/accounts/login/", {"login": user.email, "password": "wrong"})
    # On the platform host no organization is named: nothing is written anywhere.
    client_for("localhost").post("/accounts/login/", {"login": user.email, "password": "wrong"})
    assert _actions(tenant_a).count("account.sign_in_failed") == 1
    assert "account.sign_in_failed" not in _actions(tenant_b)
    with organization_schema(tenant_a):
        event = AuditEvent.objects.get(action="account.sign_in_failed")
    assert event.metadata["login"] == user.email and event.metadata["host"] == "tenant-a.localhost"
    assert event.actor_kind == "system"


def test_removing_a_factor_is_recorded_in_every_organization_of_the_person(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, tenant_b = two_tenants
    user = _member("removing@mfa.example", tenant_a, tenant_b)
    secret = _with_totp(user)
    client = client_for("tenant-a.localhost")
    _password_step(client, user.email)
    assert client.post("/accounts/2fa/authenticate/", {"code": _code(secret)}).status_code == 302
    # allauth asks for the password again before a factor is removed.
    assert client.post("/accounts/reauthenticate/", {"password": PASSWORD}).status_code == 302
    removed = client.post("/accounts/2fa/totp/deactivate/")
    assert removed.status_code == 302
    assert not Authenticator.objects.filter(user=user, type="totp").exists()
    assert "account.mfa_deactivated" in _actions(tenant_a)
    assert "account.mfa_deactivated" in _actions(tenant_b)


def test_security_keys_use_one_relying_party_for_every_host(db: None, client_for: ClientFor) -> None:
    user = _member("webauthn@mfa.example")
    client = client_for("tenant-a.localhost")
    client.force_login(user)
    client.post("/accounts/reauthenticate/", {"password": PASSWORD})
    page = client.get("/accounts/2fa/webauthn/add/")
    assert page.status_code == 200
    # The creation options name the platform's domain, so a key added here also answers a
    # sign-in on the platform host.
    options = page.context["js_data"]["creation_options"]
    assert options["publicKey"]["rp"]["id"] == "localhost"


def test_the_sign_in_page_offers_a_passkey(db: None, client_for: ClientFor) -> None:
    page = client_for("localhost").get("/accounts/login/")
    assert page.status_code == 200
    assert b"Sign in with a passkey" in page.content


def test_the_last_factor_of_a_member_of_an_organization_requiring_mfa_stays(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, _tenant_b = two_tenants
    _require_mfa(tenant_a)
    user = _member("keeping@mfa.example", tenant_a)
    secret = _with_totp(user)
    client = client_for("tenant-a.localhost")
    _password_step(client, user.email)
    assert client.post("/accounts/2fa/authenticate/", {"code": _code(secret)}).status_code == 302
    assert client.post("/accounts/reauthenticate/", {"password": PASSWORD}).status_code == 302
    refused = client.post("/accounts/2fa/totp/deactivate/")
    assert refused.status_code == 200
    assert b"requires two-factor authentication" in refused.content
    assert Authenticator.objects.filter(user=user, type="totp").exists()


def test_an_htmx_request_is_sent_to_the_page_not_swapped(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, _tenant_b = two_tenants
    _require_mfa(tenant_a)
    user = _member("htmx@mfa.example", tenant_a)
    _with_totp(user)
    client = client_for("tenant-a.localhost")
    client.force_login(user)
    response = client.get(
        "/keys/", HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL="http://tenant-a.localhost/members/?page=2"
    )
    assert response.status_code == 204
    target = urlsplit(response["HX-Redirect"])
    assert target.path == "/accounts/2fa/reauthenticate/"
    assert parse_qs(target.query)["next"] == ["/members/?page=2"]
