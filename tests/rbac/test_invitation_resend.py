"""Resending an invitation: a new token (the old link stops working), the expiry starts over,
audited "invitation.resent", rate-limited; from the REST API and the Members page; per organization."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.accounts.services import email_verified_ensure
from apps.audit.models import AuditEvent
from apps.billing.models import Plan
from apps.rbac.models import Invitation, Membership, Role
from apps.rbac.services import invitation_create
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from cognitionos.redis import redis_client
from tests.factories import member_make

_LINK = re.compile(r"https?://[^\s]+/invitations/([A-Za-z0-9_-]+)/")


@pytest.fixture(autouse=True)
def _fresh_resend_limits() -> Iterator[None]:
    def forget() -> None:
        for key in redis_client().scan_iter(match="rbac:invitation:resend*"):
            redis_client().delete(key)

    forget()
    yield
    forget()


def _roomy(organization: Organization) -> None:
    organization.plan = Plan.objects.get(code="enterprise")
    organization.save(update_fields=["plan"])
    organization_cache_forget()


def _invited(organization: Organization, owner: User, email: str) -> tuple[Invitation, str]:
    invitation, link = invitation_create(
        organization=organization,
        email=email,
        role=Role.DEVELOPER,
        actor=Principal.for_user(owner),
        link_origin=f"http://{organization.slug}.localhost",
    )
    tenant_connection().set_schema_to_public()
    found = _LINK.search(link)
    assert found
    return invitation, found.group(1)


def _client(organization: Organization, user: User) -> Client:
    client = Client(HTTP_HOST=f"{organization.slug}.localhost")
    client.force_login(user)
    return client


def _last_token(email: str) -> str:
    message = next(m for m in reversed(mail.outbox) if email in m.to)
    found = _LINK.search(str(message.body))
    assert found, message.body
    return found.group(1)


def _actions(organization: Organization) -> list[str]:
    with organization_schema(organization):
        actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    tenant_connection().set_schema_to_public()
    return actions


def test_resending_over_the_api_replaces_the_link_and_the_expiry(
    two_tenants: tuple[Organization, Organization],
) -> None:
    tenant_a, tenant_b = two_tenants
    _roomy(tenant_a)
    owner = member_make(organization=tenant_a, role=Role.OWNER)
    invitation, old_token = _invited(tenant_a, owner, "ivy@example.com")
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() + timedelta(hours=1))
    client = _client(tenant_a, owner)

    resent = client.post(f"/api/v1/invitations/{invitation.pk}/resend")
    assert resent.status_code == 200 and resent.json()["state"] == "open"
    new_token = _last_token("ivy@example.com")
    assert new_token != old_token
    invitation.refresh_from_db()
    assert invitation.expires_at > timezone.now() + timedelta(days=6)
    assert _actions(tenant_a)[-1] == "invitation.resent"
    assert "invitation.resent" not in _actions(tenant_b)

    # The old link is dead; the new one accepts.
    ivy = User.objects.create_user(email="ivy@example.com", password="a long enough password 42")
    email_verified_ensure(user=ivy)
    invited = _client(tenant_a, ivy)
    assert invited.post(f"/invitations/{old_token}/").status_code == 404
    assert invited.post(f"/invitations/{new_token}/").status_code == 302
    assert Membership.objects.filter(organization=tenant_a, user=ivy).exists()


def test_resending_is_rate_limited_and_refused_for_used_invitations(tenant: Organization) -> None:
    _roomy(tenant)
    owner = member_make(organization=tenant, role=Role.OWNER)
    invitation, _token = _invited(tenant, owner, "rate@example.com")
    client = _client(tenant, owner)
    assert client.post(f"/api/v1/invitations/{invitation.pk}/resend").status_code == 200
    again = client.post(f"/api/v1/invitations/{invitation.pk}/resend")
    assert again.status_code == 429 and again.json()["error"]["code"] == "rate_limited"
    assert _actions(tenant).count("invitation.resent") == 1

    revoked, _ = _invited(tenant, owner, "gone@example.com")
    Invitation.objects.filter(pk=revoked.pk).update(revoked_at=timezone.now())
    assert client.post(f"/api/v1/invitations/{revoked.pk}/resend").status_code == 409


def test_an_expired_invitation_is_reopened_by_resending(tenant: Organization) -> None:
    _roomy(tenant)
    owner = member_make(organization=tenant, role=Role.OWNER)
    invitation, _token = _invited(tenant, owner, "late@example.com")
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert _client(tenant, owner).post(f"/api/v1/invitations/{invitation.pk}/resend").status_code == 200
    invitation.refresh_from_db()
    assert invitation.expires_at > timezone.now()


def test_a_viewer_can_t_resend_and_another_organization_s_invitation_is_absent(
    two_tenants: tuple[Organization, Organization],
) -> None:
    tenant_a, tenant_b = two_tenants
    _roomy(tenant_a)
    owner = member_make(organization=tenant_a, role=Role.OWNER)
    invitation, _token = _invited(tenant_a, owner, "ivy@example.com")
    viewer = member_make(organization=tenant_a, role=Role.VIEWER)
    assert _client(tenant_a, viewer).post(f"/api/v1/invitations/{invitation.pk}/resend").status_code == 403
    owner_b = member_make(organization=tenant_b, role=Role.OWNER)
    assert _client(tenant_b, owner_b).post(f"/api/v1/invitations/{invitation.pk}/resend").status_code == 404
    assert _client(tenant_b, owner_b).post(f"/members/invitations/{invitation.pk}/resend/").status_code == 404


def test_the_members_page_resends_with_a_named_button(tenant: Organization) -> None:
    _roomy(tenant)
    owner = member_make(organization=tenant, role=Role.OWNER)
    invitation, old_token = _invited(tenant, owner, "ivy@example.com")
    client = _client(tenant, owner)
    page = client.get("/members/").content.decode()
    assert f'action="/members/invitations/{invitation.pk}/resend/"' in page
    assert 'Resend<span class="visually-hidden"> the invitation to ivy@example.com</span>' in page
    done = client.post(f"/members/invitations/{invitation.pk}/resend/", follow=True)
    assert "The invitation to ivy@example.com was sent again with a new link." in done.content.decode()
    assert _last_token("ivy@example.com") != old_token
    refused = client.post(f"/members/invitations/{invitation.pk}/resend/", follow=True)
    assert "This invitation was just sent" in refused.content.decode()
