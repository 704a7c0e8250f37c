"""Operators in the Django admin: confirm a domain without DNS, and the break-glass that stops
requiring SSO for a domain; both audited in the organization's log with the operator's name."""

from __future__ import annotations

from django.test import Client
from django.utils import timezone

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.sso.models import IdentityProvider, SsoDomain
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from tests.factories import operator_admin_client

PASSWORD = "a-long-operator-password-1"


def _operator_client(email: str = "ops@ops.test") -> Client:
    operator = User.objects.create_superuser(email=email, password=PASSWORD)
    return operator_admin_client(operator)


def _events(organization: Organization, action: str) -> list[AuditEvent]:
    with organization_schema(organization):
        return list(AuditEvent.objects.filter(action=action).order_by("id"))


def test_operator_confirms_a_domain_from_the_admin(two_tenants: tuple[Organization, Organization]) -> None:
    org_a, org_b = two_tenants
    row = SsoDomain.objects.create(organization=org_a, domain="acme.test", verification_token="t" * 32)
    client = _operator_client()
    listing = client.get("/admin/sso/ssodomain/")
    assert listing.status_code == 200
    assert b"acme.test" in listing.content and b"Confirm the selected domains" in listing.content
    assert b"t" * 32 not in listing.content
    response = client.post(
        "/admin/sso/ssodomain/", {"action": "confirm_domains", "_selected_action": [str(row.pk)]}, follow=True
    )
    assert response.status_code == 200
    assert b"Confirmed as verified: acme.test (tenant-a)." in response.content
    row.refresh_from_db()
    assert row.verified_at is not None and row.verified_by == "operator:ops@ops.test"
    [event] = _events(org_a, "sso.domain_verified")
    assert (event.actor_kind, event.actor_label, event.metadata["method"]) == ("operator", "ops@ops.test", "operator")
    assert _events(org_b, "sso.domain_verified") == []


def test_operator_break_glass_stops_requiring_sso(two_tenants: tuple[Organization, Organization]) -> None:
    org_a, _ = two_tenants
    IdentityProvider.objects.create(organization=org_a, entity_id="https://idp.test", sso_url="https://idp.test/sso")
    row = SsoDomain.objects.create(
        organization=org_a,
        domain="acme.test",
        verification_token="t" * 32,
        verified_at=timezone.now(),
        require_sso=True,
    )
    client = _operator_client()
    client.post("/admin/sso/ssodomain/", {"action": "stop_requiring_sso", "_selected_action": [str(row.pk)]})
    row.refresh_from_db()
    assert not row.require_sso
    [event] = _events(org_a, "sso.domain_required")
    assert (event.actor_kind, event.actor_label, event.metadata) == (
        "operator",
        "ops@ops.test",
        {"domain": "acme.test", "required": False},
    )


def test_the_admin_refuses_a_domain_another_organization_verified(
    two_tenants: tuple[Organization, Organization],
) -> None:
    org_a, org_b = two_tenants
    SsoDomain.objects.create(organization=org_a, domain="acme.test", verification_token="a", verified_at=timezone.now())
    row_b = SsoDomain.objects.create(organization=org_b, domain="acme.test", verification_token="b")
    response = _operator_client().post(
        "/admin/sso/ssodomain/", {"action": "confirm_domains", "_selected_action": [str(row_b.pk)]}, follow=True
    )
    assert b"Not changed: acme.test (tenant-b), acme.test is verified by another organization." in response.content
    row_b.refresh_from_db()
    assert row_b.verified_at is None


def test_people_who_are_not_operators_cannot_use_the_admin(two_tenants: tuple[Organization, Organization]) -> None:
    org_a, _ = two_tenants
    row = SsoDomain.objects.create(organization=org_a, domain="acme.test", verification_token="t" * 32)
    person = User.objects.create_user(email="someone@acme.test", password=PASSWORD)
    client = Client(HTTP_HOST="localhost")
    client.force_login(person)
    response = client.post("/admin/sso/ssodomain/", {"action": "confirm_domains", "_selected_action": [str(row.pk)]})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    row.refresh_from_db()
    assert row.verified_at is None
