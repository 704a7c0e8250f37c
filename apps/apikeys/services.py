from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.apikeys.keys import key_generate, key_hash
from apps.apikeys.models import ApiKey
from apps.apikeys.selectors import apikey_bound_to, apikey_cache_forget, apikey_exceeds_member, apikey_scopes_expand
from apps.audit.services import audit_record
from apps.billing.selectors import entitlement, entitlement_require
from apps.rbac.permissions import Permission
from apps.rbac.selectors import membership_permissions
from apps.tenants.models import Organization
from cognitionos.refusals import Refusal

# Principals that act for the platform (the CLI, operators, tests) and may grant any scope.
_UNBOUNDED_KINDS = frozenset({"system", "operator"})
SCOPE_VALUES = frozenset(permission.value for permission in Permission)


class ApiKeyInvalid(Refusal, ValueError):
    """The request for a key is malformed (`param` names the field)."""

    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ApiKeyRefused(Refusal, PermissionError):
    """The creator may not grant what was asked (`code` says why): the scopes asked for."""

    http_status = 403
    param = "scopes"

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    key: str  # shown once; never stored


def _scopes_normalise(scopes: Iterable[str]) -> list[str]:
    chosen = sorted({scope.strip() for scope in scopes})
    if not chosen:
        raise ApiKeyInvalid("a key needs at least one scope", param="scopes")
    unknown = [scope for scope in chosen if scope not in SCOPE_VALUES]
    if unknown:
        raise ApiKeyInvalid(
            f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(sorted(SCOPE_VALUES))}", param="scopes"
        )
    return chosen


def _key_count_check(organization: Organization) -> None:
    """A plan may bound the active keys (`api_keys`): counted with the organization row locked, so
    two creations at once can't both take the last one."""
    if entitlement(organization, "api_keys").limit is None:
        return
    Organization.objects.select_for_update().filter(pk=organization.pk).first()
    now = timezone.now()
    active = (
        ApiKey.objects.filter(organization=organization, revoked_at__isnull=True).exclude(expires_at__lte=now).count()
    )
    entitlement_require(organization, "api_keys", used=active)


@transaction.atomic
def apikey_create(
    *,
    organization: Organization,
    name: str,
    actor: Principal,
    scopes: Iterable[str] = (Permission.ADMIN.value,),
    expires_at: dt.datetime | None = None,
    user: User | None = None,
) -> IssuedKey:
    """A new key of the organization, its secret shown once.

    Never grants more than the actor holds: an actor with permissions (a member, a key) may grant
    only scopes within them; the platform's own principals (CLI, operators) may grant any. A key
    bound to `user` must also stay within that member's permissions, or it would be revoked at once.
    """
    chosen = _scopes_normalise(scopes)
    granted = apikey_scopes_expand(chosen)
    if actor.permissions is None:
        if actor.kind not in _UNBOUNDED_KINDS:
            raise ApiKeyRefused("your permissions in this organization are unknown", code="insufficient_permissions")
    elif not granted <= actor.permissions:
        above = sorted(granted - actor.permissions)
        raise ApiKeyRefused(
            f"a key can't hold more than its creator: you don't hold {', '.join(above)}", code="scope_above_own"
        )
    if expires_at is not None and expires_at <= timezone.now():
        raise ApiKeyInvalid("expires_at must be in the future", param="expires_at")
    if user is not None:
        held = membership_permissions(user_id=user.pk, organization_id=organization.pk) if user.is_active else None
        if held is None:
            raise ApiKeyInvalid(f"{user.email} is not an active member of this organization", param="user")
        if not granted <= held:
            raise ApiKeyInvalid(f"{user.email} does not hold every scope asked for", param="scopes")
    _key_count_check(organization)
    prefix, secret, key = key_generate()
    api_key = ApiKey.objects.create(
        organization=organization,
        name=name.strip() or "API key",
        prefix=prefix,
        secret_hash=key_hash(secret),
        scopes=chosen,
        expires_at=expires_at,
        user=user,
        created_by_label=actor.label,
    )
    audit_record(
        organization=organization,
        actor=actor,
        action="apikey.created",
        target=api_key,
        metadata={
            "scopes": chosen,
            "expires_at": expires_at.isoformat() if expires_at is not None else None,
            "user_id": user.pk if user is not None else None,
            "user": user.email if user is not None else None,
        },
    )
    return IssuedKey(api_key=api_key, key=key)


@transaction.atomic
def apikey_revoke(*, api_key: ApiKey, actor: Principal, reason: str = "") -> ApiKey:
    """Revoke a key (once: a second revocation changes and records nothing)."""
    now = timezone.now()
    # A conditional update, so two concurrent revocations record one event.
    if ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now):
        api_key.revoked_at = now
        audit_record(
            organization=api_key.organization,
            actor=actor,
            action="apikey.revoked",
            target=api_key,
            metadata={"reason": reason} if reason else None,
        )
        transaction.on_commit(apikey_cache_forget)
    else:
        api_key.refresh_from_db(fields=["revoked_at"])
    return api_key


def apikey_revoke_lost_access(*, api_key: ApiKey) -> None:
    """Revoke a user-bound key whose user left the organization or lost one of its scopes."""
    apikey_revoke(
        api_key=api_key,
        actor=Principal.system("access check"),
        reason="the user it is bound to left the organization or lost one of its scopes",
    )


def apikey_revoke_for_member(*, organization_id: int, user_id: int) -> int:
    """After a member's role changed or they left: revoke their bound keys that now exceed their
    permissions. Returns how many were revoked. (Membership services call this in their
    transaction; the resolver checks the same on each cache miss, so a key is revoked either way.)
    """
    revoked = 0
    for api_key in apikey_bound_to(organization_id=organization_id, user_id=user_id):
        if apikey_exceeds_member(api_key):
            apikey_revoke_lost_access(api_key=api_key)
            revoked += 1
    return revoked
