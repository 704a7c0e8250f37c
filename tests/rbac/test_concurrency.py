"""Two owners demoting (or removing) each other at the same moment: one wins, the organization
keeps an owner (the owner rows are locked while the rule is checked)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.rbac.models import Membership, Role
from apps.rbac.services import MembershipChangeRefused, membership_remove, membership_role_change
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.factories import member_make

pytestmark = pytest.mark.integration


def _race(organization: Organization, users: list[User], *, remove: bool) -> list[str]:
    """Each of two owners acts on the other at once; their outcomes, sorted."""
    memberships = [Membership.objects.get(user=user, organization=organization) for user in users]
    barrier = threading.Barrier(2)

    def act(actor: User, target: Membership) -> str:
        barrier.wait()
        try:
            if remove:
                membership_remove(organization=organization, membership=target, actor=Principal.for_user(actor))
            else:
                membership_role_change(
                    organization=organization, membership=target, role=Role.ADMIN, actor=Principal.for_user(actor)
                )
            return "done"
        except MembershipChangeRefused as refused:
            return refused.code
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        return sorted(pool.map(act, users, [memberships[1], memberships[0]]))


@pytest.mark.parametrize("remove", [False, True], ids=["demote", "remove"])
def test_two_owners_acting_on_each_other_at_once_leave_one_owner(live_db: LiveDb, remove: bool) -> None:
    organization = live_db.organization(slug=f"two-owners-{int(remove)}", name="Two owners")
    created: list[User] = []
    try:
        for _ in range(5):
            Membership.objects.filter(organization=organization).delete()
            users = [member_make(organization=organization, role=Role.OWNER) for _ in range(2)]
            created += users
            outcomes = _race(organization, users, remove=remove)
            assert Membership.objects.filter(organization=organization, role=Role.OWNER).count() == 1, outcomes
            # The one who lost found itself the last owner (or no longer able to act on an owner).
            assert outcomes.count("done") == 1, outcomes
            assert set(outcomes) - {"done"} <= {"last_owner", "above_your_role", "not_a_member"}, outcomes
    finally:
        User.objects.filter(pk__in=[user.pk for user in created]).delete()
