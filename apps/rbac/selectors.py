from __future__ import annotations

import time

from django.conf import settings
from django.db.models import QuerySet

from apps.accounts.models import User
from apps.rbac.models import CustomRole, Membership
from apps.rbac.permissions import Permission, permissions_expand, role_permissions
from apps.tenants.models import Organization


def membership_role(*, user: User, organization: Organization) -> str | None:
    """The user's built-in role in the organization ("" with a custom role), None if not a member."""
    return Membership.objects.filter(user=user, organization=organization).values_list("role", flat=True).first()


def membership_list(*, organization: Organization) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(organization=organization)
        .select_related("user", "custom_role")
        .order_by("created_at", "pk")
    )


def custom_role_list(*, organization: Organization) -> QuerySet[CustomRole]:
    return CustomRole.objects.filter(organization=organization).order_by("name")


def membership_grants(membership: Membership) -> frozenset[Permission]:
    """What a membership may do: its built-in role's permissions or its custom role's, expanded."""
    if membership.custom_role_id is not None:
        assert membership.custom_role is not None
        granted = frozenset(Permission(value) for value in membership.custom_role.permissions)
    else:
        granted = role_permissions(membership.role)
    return permissions_expand(granted)


def membership_permissions(*, user_id: int, organization_id: int) -> frozenset[str] | None:
    """The permission values a user holds in an organization, or None when not a member."""
    membership = (
        Membership.objects.select_related("custom_role")
        .filter(user_id=user_id, organization_id=organization_id)
        .first()
    )
    if membership is None:
        return None
    return frozenset(permission.value for permission in membership_grants(membership))


# (user id, organization id) -> (expires_at, permissions or None). Per process, like tenant
# resolution: a member's API call costs no membership query on the hot path. A change made by
# membership services in this process is forgotten at once; in other processes it takes effect
# within MEMBERSHIP_CACHE_SECONDS.
_CACHE: dict[tuple[int, int], tuple[float, frozenset[str] | None]] = {}
_CACHE_MAX_ENTRIES = 50_000


def membership_permissions_cached(*, user_id: int, organization_id: int) -> frozenset[str] | None:
    ttl: int = settings.MEMBERSHIP_CACHE_SECONDS
    if ttl <= 0:
        return membership_permissions(user_id=user_id, organization_id=organization_id)
    key = (user_id, organization_id)
    now = time.monotonic()
    entry = _CACHE.get(key)
    if entry is not None and entry[0] > now:
        return entry[1]
    permissions = membership_permissions(user_id=user_id, organization_id=organization_id)
    if len(_CACHE) >= _CACHE_MAX_ENTRIES:
        _CACHE.clear()
    _CACHE[key] = (now + ttl, permissions)
    return permissions


def membership_cache_forget(*, organization_id: int | None = None) -> None:
    """Drop this process's cached memberships (of one organization, or all)."""
    if organization_id is None:
        _CACHE.clear()
        return
    for key in [key for key in _CACHE if key[1] == organization_id]:
        _CACHE.pop(key, None)
