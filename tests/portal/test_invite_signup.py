"""Following an invitation to sign-up: the account is made without an organization of its own and
joins the inviting organization when the invited address is verified, landing in its portal."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.audit.models import AuditEvent
from apps.billing.models import Plan
from apps.rbac.models import Invitation, Membership, Role
from apps.rbac.services import invitation_create
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from tests.factories import member_make
from tests.portal.conftest import ClientFor

PASSWORD = "a-long-enough-passphrase-42"


def _invite(organization: Organization, email: str, role: Role = Role.DEVELOPER) -> str:
    """Invite the address as an owner of the organization would; returns the token of the link."""
    organization.plan = Plan.objects.get(code="enterprise")
    organization.save(update_fields=["plan"])
    organization_cache_forget()
    owner = member_make(organization=organization, role=Role.OWNER)
    _invitation, link = invitation_create(
        organization=organization,
        email=email,
        role=role,
        actor=Principal.for_user(owner),
        link_origin=f"http://{organization.slug}.localhost",
    )
    tenant_connection().set_schema_to_public()
    return link.rstrip("/").rsplit("/", 1)[1]


def _verification_path(email: str) -> str:
    message = next(m for m in reversed(mail.outbox) if email in m.to and "confirm-email" in str(m.body))
    match = re.search(r"https?://\S+/accounts/confirm-email/\S+/", str(message.body))
    assert match, message.body
    return urlsplit(match.group(0)).path


def _sign_up(client: Client, *, email: str, token: str, **extra: str) -> object:
    return client.post(
        "/accounts/signup/",
        {"email": email, "password1": PASSWORD, "password2": PASSWORD, "invitation": token, **extra},
    )


def _audit_actions(organization: Organization) -> list[str]:
    with organization_schema(organization):
        return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


@pytest.fixture
def organizations(two_tenants: tuple[Organization, Organization]) -> tuple[Organization, Organization]:
    return two_tenants


@pytest.mark.django_db
def test_the_invitation_page_links_to_a_sign_up_without_an_organization(
    client_for: ClientFor, organizations: tuple[Organization, Organization]
) -> None:
    inviting, _other = organizations
    token = _invite(inviting, "ivy@example.com")
    host = client_for(f"{inviting.slug}.localhost")
    page = host.get(f"/invitations/{token}/").content.decode()
    link = re.search(r'href="(/accounts/signup/\?invitation=[^"]+)"[^>]*>Create an account<', page)
    assert link, page

    form = host.get(link.group(1).replace("&amp;", "&"))
    assert form.status_code == 200
    body = form.content.decode()
    assert 'name="organization_name"' not in body and 'name="organization_slug"' not in body
    assert 'value="ivy@example.com"' in body
    assert f'name="invitation" value="{token}"' in body
    assert f"invited to {inviting.name}" in body


@pytest.mark.django_db
def test_an_invited_person_signs_up_verifies_and_lands_in_the_inviting_organization(
    client_for: ClientFor, organizations: tuple[Organization, Organization]
) -> None:
    inviting, other = organizations
    token = _invite(inviting, "ivy@example.com", role=Role.BILLING)
    organizations_before = Organization.objects.count()
    browser = client_for(f"{inviting.slug}.localhost")

    signed_up = _sign_up(browser, email="Ivy@Example.com", token=token)
    assert getattr(signed_up, "status_code", None) == 302
    assert signed_up["Location"] == "/accounts/confirm-email/"  # type: ignore[index]
    user = User.objects.get(email__iexact="ivy@example.com")
    assert Organization.objects.count() == organizations_before  # none of their own
    assert not Membership.objects.filter(user=user).exists()  # nothing before the address is verified

    confirmed = browser.post(_verification_path("ivy@example.com"))
    assert confirmed.status_code == 302
    membership = Membership.objects.get(user=user)
    assert (membership.organization_id, membership.role) == (inviting.pk, Role.BILLING)
    assert not Membership.objects.filter(user=user, organization=other).exists()
    assert Invitation.objects.get(organization=inviting, email="ivy@example.com").accepted_by_id == user.pk

    entered = browser.get(confirmed["Location"])
    assert entered.status_code == 302 and entered["Location"] == "/"
    home = browser.get("/")
    assert home.status_code == 200 and inviting.name.encode() in home.content
    assert "invitation.accepted" in _audit_actions(inviting)
    assert "invitation.accepted" not in _audit_actions(other)


@pytest.mark.django_db
def test_a_token_for_another_address_grants_nothing(
    client_for: ClientFor, organizations: tuple[Organization, Organization]
) -> None:
    inviting, _other = organizations
    token = _invite(inviting, "ivy@example.com")
    browser = client_for(f"{inviting.slug}.localhost")

    refused = _sign_up(browser, email="mallory@example.com", token=token)
    assert getattr(refused, "status_code", None) == 200
    assert "This invitation is for ivy@example.com" in refused.content.decode()  # type: ignore[attr-defined]
    assert not User.objects.filter(email="mallory@example.com").exists()
    invitation = Invitation.objects.get(organization=inviting, email="ivy@example.com")
    assert invitation.accepted_at is None


@pytest.mark.django_db
def test_another_organizations_token_is_not_valid_here_and_sign_up_stays_normal(
    client_for: ClientFor, organizations: tuple[Organization, Organization]
) -> None:
    inviting, other = organizations
    token = _invite(inviting, "ivy@example.com")
    elsewhere = client_for(f"{other.slug}.localhost")
    form = elsewhere.get(f"/accounts/signup/?invitation={token}").content.decode()
    assert "This invitation link is not valid." in form
    assert 'name="organization_slug"' in form

    _sign_up(elsewhere, email="ivy@example.com", token=token, organization_name="Ivy Co", organization_slug="ivy-co")
    user = User.objects.get(email="ivy@example.com")
    elsewhere.post(_verification_path("ivy@example.com"))
    assert [m.organization.slug for m in Membership.objects.filter(user=user)] == ["ivy-co"]


@pytest.mark.django_db
def test_an_expired_token_says_so_and_falls_back_to_a_normal_sign_up(
    client_for: ClientFor, organizations: tuple[Organization, Organization]
) -> None:
    inviting, _other = organizations
    token = _invite(inviting, "late@example.com")
    Invitation.objects.filter(organization=inviting, email="late@example.com").update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    browser = client_for(f"{inviting.slug}.localhost")
    form = browser.get(f"/accounts/signup/?invitation={token}").content.decode()
    assert "This invitation has expired: ask for a new one." in form
    assert 'name="organization_name"' in form and 'name="organization_slug"' in form
    assert 'name="invitation" value=""' in form or f'value="{token}"' not in form

    # Posting the stale token anyway asks for the organization like any sign-up.
    refused = _sign_up(browser, email="late@example.com", token=token)
    assert getattr(refused, "status_code", None) == 200
    assert not User.objects.filter(email="late@example.com").exists()

    done = _sign_up(
        browser, email="late@example.com", token="", organization_name="Late Co", organization_slug="late-co"
    )
    assert getattr(done, "status_code", None) == 302
    user = User.objects.get(email="late@example.com")
    browser.post(_verification_path("late@example.com"))
    assert [m.organization.slug for m in Membership.objects.filter(user=user)] == ["late-co"]


@pytest.mark.django_db
def test_verified_in_another_browser_the_invitation_is_accepted_there_too(
    client_for: ClientFor, organizations: tuple[Organization, Organization]
) -> None:
    # The sign-up through the invitation is remembered on the invitation, not in the browser's
    # session: opening the verification link in another browser accepts it as well (audited).
    inviting, other = organizations
    token = _invite(inviting, "ivy@example.com")
    _sign_up(client_for(f"{inviting.slug}.localhost"), email="ivy@example.com", token=token)
    user = User.objects.get(email="ivy@example.com")
    assert not Membership.objects.filter(user=user).exists()  # not before the address is verified

    elsewhere = client_for(f"{other.slug}.localhost")  # another browser, even on another host
    assert elsewhere.post(_verification_path("ivy@example.com")).status_code == 302
    assert [m.organization_id for m in Membership.objects.filter(user=user)] == [inviting.pk]
    invitation = Invitation.objects.get(organization=inviting, email="ivy@example.com")
    assert invitation.accepted_by_id == user.pk
    with organization_schema(inviting):
        accepted = AuditEvent.objects.get(action="invitation.accepted")
    tenant_connection().set_schema_to_public()
    assert accepted.metadata["via"] == "email_verification" and accepted.metadata["user_id"] == user.pk
    assert "invitation.accepted" not in _audit_actions(other)

    # The link is used up: following it again says so.
    elsewhere = client_for(f"{inviting.slug}.localhost")
    elsewhere.force_login(user)
    again = elsewhere.post(f"/invitations/{token}/")
    assert again.status_code == 409


@pytest.mark.django_db
def test_verifying_an_address_accepts_only_the_invitation_the_sign_up_followed(
    client_for: ClientFor, organizations: tuple[Organization, Organization]
) -> None:
    # Another organization's invitation to the same address was never followed: it waits for a click.
    inviting, other = organizations
    token = _invite(inviting, "ivy@example.com")
    other_token = _invite(other, "ivy@example.com")
    _sign_up(client_for(f"{inviting.slug}.localhost"), email="ivy@example.com", token=token)
    client_for(f"{inviting.slug}.localhost").post(_verification_path("ivy@example.com"))
    user = User.objects.get(email="ivy@example.com")
    assert [m.organization_id for m in Membership.objects.filter(user=user)] == [inviting.pk]
    assert Invitation.objects.get(organization=other, email="ivy@example.com").accepted_at is None
    assert other_token
