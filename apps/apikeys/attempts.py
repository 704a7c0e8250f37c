"""Failed API key attempts: unknown keys are remembered briefly, and limited per client address.

Without this an unknown key costs a database query every time, and nothing stops a client from
trying keys as fast as it can send them. Both records live in Redis, shared by every process:

- `apikey:miss:<sha256 of the key>` for API_KEY_MISS_CACHE_SECONDS: the key was asked for and is
  unknown (or revoked), so asking again costs no query. Only the digest is stored, never the key;
  keys are random, so a miss never hides a key created later, and a revocation is a miss anyway.
- `apikey:fail:<address>` counts failures in a window of a minute from the first one; at
  API_KEY_FAILURES_PER_MINUTE every key from that address is refused until the window ends (the
  known-good keys a process has cached keep working: guessing them is what the limit prevents).

IPv6 clients are counted per /64, the block one subscriber usually holds. If Redis cannot be
reached the attempt goes to the database as before: authentication does not depend on the limiter.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from dataclasses import dataclass

import redis
from django.conf import settings

from cognitionos.redis import redis_client

logger = logging.getLogger(__name__)

_MISS = "apikey:miss:"
_FAIL = "apikey:fail:"
_WINDOW_S = 60


@dataclass(frozen=True, slots=True)
class AttemptState:
    retry_after_s: int | None  # set when the address is over its limit
    known_miss: bool  # the key was looked up recently and is unknown


def key_digest(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def client_bucket(address: str) -> str:
    """The unit failures are counted in: the address, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def attempts_state(*, bucket: str, digest: str) -> AttemptState:
    try:
        pipe = redis_client().pipeline(transaction=False)
        pipe.get(_FAIL + bucket)
        pipe.ttl(_FAIL + bucket)
        pipe.exists(_MISS + digest)
        failures, ttl, miss = pipe.execute()
    except (redis.RedisError, OSError) as error:
        logger.warning("API key attempts unchecked, Redis unavailable: %s", type(error).__name__)
        return AttemptState(retry_after_s=None, known_miss=False)
    if failures is not None and int(failures) >= settings.API_KEY_FAILURES_PER_MINUTE:
        return AttemptState(retry_after_s=max(int(ttl), 1), known_miss=bool(miss))
    return AttemptState(retry_after_s=None, known_miss=bool(miss))


# One script, so that a counter can never be left without its expiry (a lockout for good): the
# window starts at the first failure and later failures do not extend it.
_COUNT_FAILURE = """
local failures = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
if ARGV[2] ~= '0' then redis.call('SET', KEYS[2], '1', 'EX', ARGV[2]) end
return failures
"""


def attempts_fail(*, bucket: str, digest: str, remember_miss: bool) -> None:
    """Count a failed attempt from `bucket`; remember the key as unknown if it was looked up."""
    miss_ttl = settings.API_KEY_MISS_CACHE_SECONDS if remember_miss else 0
    try:
        redis_client().eval(_COUNT_FAILURE, 2, _FAIL + bucket, _MISS + digest, _WINDOW_S, max(miss_ttl, 0))
    except (redis.RedisError, OSError) as error:
        logger.warning("API key failure not counted, Redis unavailable: %s", type(error).__name__)
