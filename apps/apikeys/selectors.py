from __future__ import annotations

import copy
import datetime as dt
import hmac
import time

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from apps.accounts.principals import Principal
from apps.apikeys.attempts import attempts_fail, attempts_state, client_bucket, key_digest
from apps.apikeys.keys import key_hash, key_split
from apps.apikeys.models import ApiKey
from apps.apikeys.usage import apikey_used
from apps.rbac.permissions import Permission, permissions_expand
from apps.rbac.selectors import membership_permissions
from apps.tenants.errors import ApiKeyAttemptsExceeded
from apps.tenants.models import Organization

# Key -> (cached until, key id, organization, principal): the gateway's hot path makes no query per call.
# A revocation (or a bound user's lost access) reaches every process within
# TENANT_RESOLUTION_CACHE_SECONDS; an entry never outlives the key's expiry.
_KEY_CACHE: dict[str, tuple[float, int, Organization, Principal]] = {}
_KEY_CACHE_MAX_ENTRIES = 10_000


def apikey_scopes_expand(scopes: list[str] | frozenset[str]) -> frozenset[str]:
    """The permission values a key's scopes grant (`admin` stands for all)."""
    return frozenset(permission.value for permission in permissions_expand({Permission(scope) for scope in scopes}))


def apikey_exceeds_member(api_key: ApiKey) -> bool:
    """A key bound to a user holds a scope that user no longer has here (or they left, or were
    deactivated): it must be revoked."""
    if api_key.user_id is None:
        return False
    assert api_key.user is not None
    held = (
        membership_permissions(user_id=api_key.user_id, organization_id=api_key.organization_id)
        if api_key.user.is_active
        else None
    )
    return held is None or not apikey_scopes_expand(api_key.scopes) <= held


def _still_valid(api_key: ApiKey, *, now: dt.datetime) -> bool:
    """Not expired, and not bound to a user who lost its access (which revokes it here)."""
    if api_key.expires_at is not None and api_key.expires_at <= now:
        return False
    if apikey_exceeds_member(api_key):
        from apps.apikeys.services import apikey_revoke_lost_access  # services import this module

        apikey_revoke_lost_access(api_key=api_key)
        return False
    return True


def apikey_resolve(raw_key: str, *, client_address: str = "") -> tuple[Organization, Principal] | None:
    """The organization and principal a presented key acts as, or None (unknown, wrong, revoked or
    expired; or bound to a user who lost its access, which revokes it).

    The principal's permissions are the key's scopes, expanded. Raises ApiKeyAttemptsExceeded when
    `client_address` has failed too often (apps.apikeys.attempts).
    """
    now = time.monotonic()
    cached = _KEY_CACHE.get(raw_key)
    if cached is not None and cached[0] > now:
        apikey_used(cached[1])
        return copy.copy(cached[2]), cached[3]
    bucket, digest = client_bucket(client_address), key_digest(raw_key)
    state = attempts_state(bucket=bucket, digest=digest)
    if state.retry_after_s is not None:
        raise ApiKeyAttemptsExceeded(state.retry_after_s)
    parts = key_split(raw_key)
    if state.known_miss or parts is None:
        attempts_fail(bucket=bucket, digest=digest, remember_miss=False)
        return None
    prefix, secret = parts
    api_key = (
        ApiKey.objects.select_related("organization__plan", "user")
        .filter(prefix=prefix, revoked_at__isnull=True)
        .first()
    )
    if api_key is None or not hmac.compare_digest(api_key.secret_hash, key_hash(secret)):
        attempts_fail(bucket=bucket, digest=digest, remember_miss=True)
        return None
    wall_now = timezone.now()
    if not _still_valid(api_key, now=wall_now):
        # Like a revoked key (attempts.py): remembered as a miss, so asking again costs no query.
        attempts_fail(bucket=bucket, digest=digest, remember_miss=True)
        return None
    principal = Principal(
        kind="api_key", id=str(api_key.pk), label=api_key.label, permissions=apikey_scopes_expand(api_key.scopes)
    )
    apikey_used(api_key.pk)
    ttl: float = settings.TENANT_RESOLUTION_CACHE_SECONDS
    if api_key.expires_at is not None:
        ttl = min(ttl, (api_key.expires_at - wall_now).total_seconds())
    if ttl > 0:
        if len(_KEY_CACHE) >= _KEY_CACHE_MAX_ENTRIES:
            _KEY_CACHE.clear()
        _KEY_CACHE[raw_key] = (now + ttl, api_key.pk, api_key.organization, principal)
        return copy.copy(api_key.organization), principal
    return api_key.organization, principal


def apikey_cache_forget() -> None:
    _KEY_CACHE.clear()


def apikey_list(*, organization: Organization) -> QuerySet[ApiKey]:
    """An organization's keys, revoked ones included (never a secret: only its hash is stored)."""
    return ApiKey.objects.filter(organization=organization).select_related("user")


def apikey_get(*, organization: Organization, key_id: int) -> ApiKey:
    """One key of the organization; ApiKey.DoesNotExist for another organization's."""
    return ApiKey.objects.select_related("organization", "user").get(organization=organization, pk=key_id)


def apikey_bound_to(*, organization_id: int, user_id: int) -> QuerySet[ApiKey]:
    """Unrevoked keys of an organization bound to a user."""
    return ApiKey.objects.select_related("organization", "user").filter(
        organization_id=organization_id, user_id=user_id, revoked_at__isnull=True
    )
