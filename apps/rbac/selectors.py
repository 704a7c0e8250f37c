from __future__ import annotations

from apps.accounts.models import User
from apps.rbac.models import Membership
from apps.tenants.models import Organization


def membership_role(*, user: User, organization: Organization) -> str | None:
    """The user's role in the organization, or None if they are not a member."""
    return Membership.objects.filter(user=user, organization=organization).values_list("role", flat=True).first()
