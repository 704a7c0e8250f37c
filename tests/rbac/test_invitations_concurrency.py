"""Two invitations for the organization's last seat at the same moment: one is sent, the other is
refused with plan_limit_members (the organization row is locked while the seats are counted)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.billing.models import Plan
from apps.rbac.models import Invitation, Membership, Role
from apps.rbac.services import MembershipChangeRefused, invitation_create
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.factories import member_make, plan_make, plan_purge

pytestmark = pytest.mark.integration


def _race(organization: Organization, owner: User, emails: list[str]) -> list[str]:
    barrier = threading.Barrier(len(emails))

    def invite(email: str) -> str:
        barrier.wait()
        try:
            invitation_create(
                organization=organization,
                email=email,
                role=Role.VIEWER,
                actor=Principal.for_user(owner),
                link_origin="http://example.localhost",
            )
            return "sent"
        except MembershipChangeRefused as refused:
            return refused.code
        finally:
            connection.close()

    with ThreadPoolExecutor(len(emails)) as pool:
        return sorted(pool.map(invite, emails))


def test_two_invitations_for_the_last_seat_send_one(live_db: LiveDb) -> None:
    organization = live_db.organization(slug="last-seat", name="Last seat")
    plan = plan_make(code="two-seats", name="Two seats", max_members=2)
    Organization.objects.filter(pk=organization.pk).update(plan=plan)
    organization.refresh_from_db()
    Membership.objects.filter(organization=organization).delete()
    owner = member_make(organization=organization, role=Role.OWNER)
    try:
        for attempt in range(5):
            Invitation.objects.filter(organization=organization).delete()
            outcomes = _race(organization, owner, [f"seat-{attempt}-a@example.com", f"seat-{attempt}-b@example.com"])
            assert outcomes == ["plan_limit_members", "sent"], outcomes
            assert Invitation.objects.filter(organization=organization).count() == 1
    finally:
        User.objects.filter(pk=owner.pk).delete()
        Organization.objects.filter(pk=organization.pk).update(plan=Plan.objects.get(code="free"))
        plan_purge(plan)
