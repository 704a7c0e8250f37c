"""Requests and tokens per minute, per organization and per API key, counted in Redis so that the
limits hold across every web and worker process. Fixed one-minute windows, all four counters in one
script (which also carries the engine's other reads before a call, the breakers' states, so that
admitting a call costs one round trip); a refusal gives back what it took, in the same script, and
says when the window turns."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from redis.commands.core import Script

from apps.billing.selectors import plan_limit
from apps.tenants.models import Organization
from cognitionos.redis import redis_client


@dataclass(frozen=True)
class RateLimited(Exception):
    what: str
    limit: int
    retry_after_s: int

    def __str__(self) -> str:
        return f"rate limit reached: {self.limit} {self.what} per minute"


class RateLimitUnavailable(Exception):
    """The counters can't be reached: calls are refused rather than let through unmetered."""


# KEYS: the n counters, then the hashes to read. ARGV: n, the counters' TTL, each counter's amount
# and limit, then the field to read of each hash. Returns the (1-based) counter over its limit, 0
# if none (all taken) — when one is over, every counter is given back — then the values read.
_TAKE = """
local n = tonumber(ARGV[1])
local over = 0
for i = 1, n do
  local count = redis.call('INCRBY', KEYS[i], ARGV[1 + 2 * i])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
  if over == 0 and count > tonumber(ARGV[2 + 2 * i]) then over = i end
end
if over > 0 then
  for i = 1, n do redis.call('DECRBY', KEYS[i], ARGV[1 + 2 * i]) end
end
local result = {over}
for j = n + 1, #KEYS do
  result[#result + 1] = redis.call('HGET', KEYS[j], ARGV[2 + n + j])
end
return result
"""


@cache
def _take_script() -> Script:
    return redis_client().register_script(_TAKE)


def rate_limit_take(
    *, organization: Organization, api_key_id: int | None, tokens: int, reads: Sequence[tuple[str, str]] = ()
) -> list[Any]:
    """Take a request and `tokens` from the organization's and the key's limits, or raise RateLimited
    (RateLimitUnavailable when Redis can't be reached: fail closed). `reads`: (hash, field) pairs
    read in the same round trip; their values are returned, in order."""
    now = time.time()
    window = int(now // 60)
    retry_after = max(1, 60 - int(now % 60))
    rpm = plan_limit(organization, "requests_per_minute")
    tpm = plan_limit(organization, "tokens_per_minute")
    scopes = [f"org:{organization.pk}"] + ([f"key:{api_key_id}"] if api_key_id is not None else [])
    checks: list[tuple[str, str, int, int]] = []
    for scope in scopes:
        checks.append((f"llm:rl:{scope}:req:{window}", "requests", 1, rpm))
        checks.append((f"llm:rl:{scope}:tok:{window}", "tokens", tokens, tpm))
    try:
        replies = _take_script()(
            keys=[key for key, _, _, _ in checks] + [name for name, _ in reads],
            args=[len(checks), 120, *(value for _, _, amount, limit in checks for value in (amount, limit))]
            + [field for _, field in reads],
        )
    except Exception as exc:
        # Fail closed on any failure of the store: besides RedisError, redis-py lets AttributeError
        # and ValueError out of connections the server dropped or timed out mid-handshake (seen here
        # under load: "'NoneType' object has no attribute 'readline'", "I/O operation on closed file").
        raise RateLimitUnavailable(f"{type(exc).__name__}: {exc}") from exc
    over, values = int(replies[0]), list(replies[1:])
    if over:
        _, what, _, limit = checks[over - 1]
        raise RateLimited(what=what, limit=limit, retry_after_s=retry_after)
    return values
