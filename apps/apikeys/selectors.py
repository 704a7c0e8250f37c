from __future__ import annotations

import copy
import hmac
import time

from django.conf import settings

from apps.accounts.principals import Principal
from apps.apikeys.attempts import attempts_fail, attempts_state, client_bucket, key_digest
from apps.apikeys.keys import key_hash, key_split
from apps.apikeys.models import ApiKey
from apps.tenants.errors import ApiKeyAttemptsExceeded
from apps.tenants.models import Organization

# Key -> (expires_at, organization, principal): the gateway's hot path makes no query per call.
# A revocation reaches every process within TENANT_RESOLUTION_CACHE_SECONDS.
_KEY_CACHE: dict[str, tuple[float, Organization, Principal]] = {}
_KEY_CACHE_MAX_ENTRIES = 10_000


def apikey_resolve(raw_key: str, *, client_address: str = "") -> tuple[Organization, Principal] | None:
    """The organization and principal a presented key acts as, or None (unknown, wrong or revoked).

    Raises ApiKeyAttemptsExceeded when `client_address` has failed too often (apps.apikeys.attempts).
    """
    now = time.monotonic()
    cached = _KEY_CACHE.get(raw_key)
    if cached is not None and cached[0] > now:
        return copy.copy(cached[1]), cached[2]
    bucket, digest = client_bucket(client_address), key_digest(raw_key)
    state = attempts_state(bucket=bucket, digest=digest)
    if state.retry_after_s is not None:
        raise ApiKeyAttemptsExceeded(state.retry_after_s)
    parts = key_split(raw_key)
    if state.known_miss or parts is None:
        attempts_fail(bucket=bucket, digest=digest, remember_miss=False)
        return None
    prefix, secret = parts
    api_key = ApiKey.objects.select_related("organization__plan").filter(prefix=prefix, revoked_at__isnull=True).first()
    if api_key is None or not hmac.compare_digest(api_key.secret_hash, key_hash(secret)):
        attempts_fail(bucket=bucket, digest=digest, remember_miss=True)
        return None
    principal = Principal(kind="api_key", id=str(api_key.pk), label=api_key.label)
    ttl = settings.TENANT_RESOLUTION_CACHE_SECONDS
    if ttl > 0:
        if len(_KEY_CACHE) >= _KEY_CACHE_MAX_ENTRIES:
            _KEY_CACHE.clear()
        _KEY_CACHE[raw_key] = (now + ttl, api_key.organization, principal)
        return copy.copy(api_key.organization), principal
    return api_key.organization, principal


def apikey_cache_forget() -> None:
    _KEY_CACHE.clear()
