"""Reads for the portal's pages."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.accounts.models import User
from apps.rbac.models import Membership
from apps.tenants.models import Organization


def portal_memberships(*, user: User) -> QuerySet[Membership]:
    """The organizations a person can enter from the switcher, by name (one query)."""
    return (
        Membership.objects.filter(user=user)
        .exclude(organization__status=Organization.Status.DELETING)
        .select_related("organization")
        .order_by("organization__name", "organization__slug")
    )


def portal_membership(*, user: User, organization: Organization) -> Membership | None:
    return Membership.objects.filter(user=user, organization=organization).first()
