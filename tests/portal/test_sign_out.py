"""Signing out on one host ends the person's sessions on every host (sessions are per host: a
handover makes one on each organization's host), and nobody else's."""

from __future__ import annotations

from allauth.account.models import EmailAddress
from django.test import Client

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.rbac.models import Role
from apps.rbac.services import membership_create
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.portal.conftest import ClientFor
from tests.portal.handover_support import handover_form, handover_post

PASSWORD = "a-long-enough-passphrase-42"


def _member(email: str, *organizations: Organization) -> User:
    user = User.objects.create_user(email=email, password=PASSWORD)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    for organization in organizations:
        membership_create(user=user, organization=organization, role=Role.DEVELOPER, actor=Principal.system("tests"))
    tenant_connection().set_schema_to_public()
    return user


def _signed_in(client: Client) -> bool:
    return client.get("/members/").status_code == 200


def test_signing_out_on_one_host_ends_the_sessions_on_the_others(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, tenant_b = two_tenants
    user = _member("dev@signout.example", tenant_a, tenant_b)
    bystander = _member("other@signout.example", tenant_a, tenant_b)
    # One browser: signed in on tenant A's host, then through the switcher on tenant B's.
    on_a = client_for("tenant-a.localhost")
    assert on_a.post("/accounts/login/?next=/", {"login": user.email, "password": PASSWORD}).status_code == 302
    on_b = client_for("tenant-b.localhost")
    assert handover_post(on_b, handover_form(on_a.get("/enter/tenant-b/")).token).status_code == 302
    assert _signed_in(on_a) and _signed_in(on_b)
    theirs = client_for("tenant-b.localhost")
    theirs.force_login(bystander)

    assert on_a.post("/accounts/logout/").status_code == 302
    assert not _signed_in(on_a)
    # Tenant B's host: its session ends at its next request (a page, the API with the session).
    assert on_b.get("/members/").status_code == 302
    assert "_auth_user_id" not in on_b.session
    assert not _signed_in(on_b)
    assert _signed_in(theirs)  # another person's session is not touched


def test_a_sign_in_after_the_sign_out_stays(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, _tenant_b = two_tenants
    user = _member("again@signout.example", tenant_a)
    on_a = client_for("tenant-a.localhost")
    on_a.force_login(user)
    on_a.post("/accounts/logout/")
    assert on_a.post("/accounts/login/?next=/", {"login": user.email, "password": PASSWORD}).status_code == 302
    assert _signed_in(on_a)
    assert _signed_in(on_a)  # and on the next request too


def test_moving_from_the_platform_host_signs_out_nowhere_else(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    # The platform host's session moves to the organization's host (it ends there without a sign-out).
    tenant_a, tenant_b = two_tenants
    user = _member("mover@signout.example", tenant_a, tenant_b)
    on_a = client_for("tenant-a.localhost")
    on_a.force_login(user)
    platform = client_for("localhost")
    platform.force_login(user)
    on_b = client_for("tenant-b.localhost")
    assert handover_post(on_b, handover_form(platform.get("/enter/tenant-b/")).token).status_code == 302
    assert _signed_in(on_b) and _signed_in(on_a)
