"""A circuit breaker per provider and model, shared by every process through Redis.

Closed: calls go through; failures are counted. Open (after LLM_BREAKER_FAILURES failures in a
row): calls are skipped for LLM_BREAKER_COOLDOWN_S. Half-open: one process wins the probe; its
success closes the breaker, its failure opens it again.

Only provider-side failures are recorded (the engine's choice): a request's own error must not let
one organization take a model away from the others. A deployment called with an organization's own
key has a breaker of that organization alone (`scope`), since its key and quota are nobody else's.
"""

from __future__ import annotations

import time

from django.conf import settings

from apps.llm.metrics import BREAKER_OPEN
from cognitionos.redis import redis_client

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


# The hash field whose presence means open (or half-open, after the cooldown).
OPENED_AT = "opened_at"


def breaker_key(provider: str, model: str, scope: str = "") -> str:
    return f"llm:breaker:{provider}:{model}" + (f":{scope}" if scope else "")


def _state_of(opened_at: bytes | str | None) -> str:
    if opened_at is None:
        return CLOSED
    if time.time() - float(opened_at) < settings.LLM_BREAKER_COOLDOWN_S:
        return OPEN
    return HALF_OPEN


def breaker_state(provider: str, model: str, *, scope: str = "") -> str:
    return _state_of(redis_client().hget(breaker_key(provider, model, scope), OPENED_AT))


def breaker_allow(provider: str, model: str, *, scope: str = "", read: tuple[bytes | str | None] | None = None) -> bool:
    """Whether a call may go to the deployment now. `read`: its `opened_at` field as just read in
    the call's admission round trip (saves a round trip of its own)."""
    state = breaker_state(provider, model, scope=scope) if read is None else _state_of(read[0])
    if state == CLOSED:
        return True
    if state == OPEN:
        return False
    # Half-open: a single probe, claimed atomically across processes.
    probe = f"{breaker_key(provider, model, scope)}:probe"
    return bool(redis_client().set(probe, "1", nx=True, ex=settings.LLM_BREAKER_COOLDOWN_S))


def breaker_record(provider: str, model: str, *, success: bool, scope: str = "") -> None:
    key = breaker_key(provider, model, scope)
    client = redis_client()
    if success:
        if client.exists(key):
            client.delete(key, f"{key}:probe")
            if not scope:
                BREAKER_OPEN.labels(provider, model).set(0)
        return
    failures = client.hincrby(key, "failures", 1)
    client.expire(key, 24 * 3600)
    if failures >= settings.LLM_BREAKER_FAILURES:
        client.hset(key, "opened_at", str(time.time()))
        if not scope:  # the metric's labels stay bounded: no organization ids
            BREAKER_OPEN.labels(provider, model).set(1)
        client.delete(f"{key}:probe")
