"""Requests and tokens per minute, per organization and per API key, counted in Redis so that the
limits hold across every web and worker process. Fixed one-minute windows, all four counters in one
pipelined round trip (which also carries the engine's other reads before a call, the breakers'
states, so that admitting a call costs one round trip); a refusal gives back what it took and says
when the window turns."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
        pipe = redis_client().pipeline(transaction=False)
        for key, _, amount, _ in checks:
            pipe.incrby(key, amount)
            pipe.expire(key, 120)
        for name, field in reads:
            pipe.hget(name, field)
        replies = pipe.execute()
        counts, values = replies[: 2 * len(checks) : 2], replies[2 * len(checks) :]
        over = [(check, count) for check, count in zip(checks, counts, strict=True) if count > check[3]]
        if over:
            undo = redis_client().pipeline(transaction=False)
            for key, _, amount, _ in checks:
                undo.decrby(key, amount)
            undo.execute()
    except Exception as exc:
        # Fail closed on any failure of the store: besides RedisError, redis-py lets AttributeError
        # and ValueError out of connections the server dropped or timed out mid-handshake (seen here
        # under load: "'NoneType' object has no attribute 'readline'", "I/O operation on closed file").
        raise RateLimitUnavailable(f"{type(exc).__name__}: {exc}") from exc
    if over:
        (_, what, _, limit), _ = over[0]
        raise RateLimited(what=what, limit=limit, retry_after_s=retry_after)
    return values
