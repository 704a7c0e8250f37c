from __future__ import annotations

import hashlib
import time

from allauth.account.models import EmailAddress
from django.conf import settings
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.http.request import split_domain_port
from django.utils import timezone

from apps.accounts.models import User
from apps.billing.selectors import entitlement
from apps.billing.signals import entitlements_changed
from apps.rbac.models import CustomRole, Invitation, Membership, Role
from apps.rbac.permissions import Permission, permissions_expand, role_permissions
from apps.tenants.models import Organization


def membership_role(*, user: User, organization: Organization) -> str | None:
    """The user's built-in role in the organization ("" with a custom role), None if not a member."""
    return Membership.objects.filter(user=user, organization=organization).values_list("role", flat=True).first()


def membership_list(*, organization: Organization) -> QuerySet[Membership]:
    # With the organization's plan (joined, no query more): what a custom role grants depends on it.
    return (
        Membership.objects.filter(organization=organization)
        .select_related("user", "custom_role", "organization__plan")
        .order_by("created_at", "pk")
    )


def organization_owner_count(*, organization: Organization) -> int:
    return Membership.objects.filter(organization=organization, role=Role.OWNER).count()


def membership_get(*, organization: Organization, user_id: int) -> Membership | None:
    return membership_list(organization=organization).filter(user_id=user_id).first()


def custom_role_list(*, organization: Organization) -> QuerySet[CustomRole]:
    return CustomRole.objects.filter(organization=organization).order_by("name")


# What a member holding a custom role may do while the organization's plan doesn't include custom
# roles (after a downgrade): the role and its assignment are kept, and count again once the plan
# includes them again; meanwhile the member reads like a Viewer and can change nothing.
CUSTOM_ROLE_FALLBACK = Role.VIEWER


def custom_roles_included(organization: Organization) -> bool:
    """Whether the organization's plan includes custom roles (the plan is on the organization's row
    as tenant resolution and membership_list load it: no query)."""
    return entitlement(organization, "custom_roles").allowed


def membership_grants(membership: Membership, *, custom_roles: bool) -> frozenset[Permission]:
    """What a membership may do: its built-in role's permissions or its custom role's, expanded.
    `custom_roles`: whether the organization's plan includes them (custom_roles_included)."""
    if membership.custom_role_id is not None:
        if not custom_roles:
            return permissions_expand(role_permissions(CUSTOM_ROLE_FALLBACK))
        assert membership.custom_role is not None
        granted = frozenset(Permission(value) for value in membership.custom_role.permissions)
    else:
        granted = role_permissions(membership.role)
    return permissions_expand(granted)


def membership_permissions(*, user_id: int, organization_id: int) -> frozenset[str] | None:
    """The permission values a user holds in an organization, or None when not a member."""
    membership = (
        Membership.objects.select_related("custom_role", "organization__plan")
        .filter(user_id=user_id, organization_id=organization_id)
        .first()
    )
    if membership is None:
        return None
    grants = membership_grants(membership, custom_roles=custom_roles_included(membership.organization))
    return frozenset(permission.value for permission in grants)


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


def invitation_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_list(*, organization: Organization) -> QuerySet[Invitation]:
    """Every invitation of the organization, newest first."""
    return (
        Invitation.objects.filter(organization=organization)
        .select_related("custom_role")
        .order_by("-created_at", "-pk")
    )


def invitation_open_list(*, organization: Organization) -> QuerySet[Invitation]:
    """Invitations that can still be accepted (they hold a seat of the plan's `max_members`)."""
    return invitation_list(organization=organization).filter(
        Q(accepted_at__isnull=True) & Q(revoked_at__isnull=True) & Q(expires_at__gt=timezone.now())
    )


def invitation_for_token(*, organization: Organization, token: str) -> Invitation:
    """The organization's invitation the token opens (raises Invitation.DoesNotExist: a token of
    another organization is as unknown here as a forged one)."""
    return Invitation.objects.select_related("organization", "custom_role").get(
        organization=organization, token_hash=invitation_token_hash(token)
    )


def invitation_state(invitation: Invitation) -> str:
    """open, accepted, revoked or expired."""
    if invitation.accepted_at is not None:
        return "accepted"
    if invitation.revoked_at is not None:
        return "revoked"
    if invitation.expires_at <= timezone.now():
        return "expired"
    return "open"


def invitation_link_origin(*, request: HttpRequest, organization: Organization) -> str:
    """scheme://<organization's host>[:port] as seen by this request: where an invitation's link
    leads (the organization's portal, whichever host the invitation was made on)."""
    domain = organization.domains.filter(is_primary=True).values_list("domain", flat=True).first()
    host = domain or f"{organization.slug}.{settings.BASE_DOMAIN}"
    _host, port = split_domain_port(request.get_host())
    default_port = "443" if request.is_secure() else "80"
    suffix = f":{port}" if port and port != default_port else ""
    return f"{request.scheme}://{host}{suffix}"


def invitation_address_verified(*, invitation: Invitation, user: User) -> bool:
    """Whether the user holds the invited address, verified (the one who may accept)."""
    return bool(EmailAddress.objects.filter(user=user, email__iexact=invitation.email, verified=True).exists())


def _entitlements_changed(organization: Organization | None = None, **_: object) -> None:
    # A member's permissions depend on the plan (custom roles): issue 10 left a plan change to the TTL.
    membership_cache_forget(organization_id=organization.pk if organization is not None else None)


entitlements_changed.connect(_entitlements_changed, dispatch_uid="rbac.membership_cache_forget")
