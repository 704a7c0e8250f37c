"""A circuit breaker per provider and model, shared by every process through Redis.

Closed: calls go through; failures are counted. Open (after LLM_BREAKER_FAILURES failures in a
row): calls are skipped for LLM_BREAKER_COOLDOWN_S. Half-open: one process wins the probe; its
success closes the breaker, its failure opens it again.
"""

from __future__ import annotations

import time

from django.conf import settings

from apps.llm.metrics import BREAKER_OPEN
from cognitionos.redis import redis_client

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


def _key(provider: str, model: str) -> str:
    return f"llm:breaker:{provider}:{model}"


def breaker_state(provider: str, model: str) -> str:
    data = redis_client().hmget(_key(provider, model), ["opened_at"])
    opened_at = data[0]
    if opened_at is None:
        return CLOSED
    if time.time() - float(opened_at) < settings.LLM_BREAKER_COOLDOWN_S:
        return OPEN
    return HALF_OPEN


def breaker_allow(provider: str, model: str) -> bool:
    state = breaker_state(provider, model)
    if state == CLOSED:
        return True
    if state == OPEN:
        return False
    # Half-open: a single probe, claimed atomically across processes.
    return bool(redis_client().set(f"{_key(provider, model)}:probe", "1", nx=True, ex=settings.LLM_BREAKER_COOLDOWN_S))


def breaker_record(provider: str, model: str, *, success: bool) -> None:
    key = _key(provider, model)
    client = redis_client()
    if success:
        if client.exists(key):
            client.delete(key, f"{key}:probe")
            BREAKER_OPEN.labels(provider, model).set(0)
        return
    failures = client.hincrby(key, "failures", 1)
    client.expire(key, 24 * 3600)
    if failures >= settings.LLM_BREAKER_FAILURES:
        client.hset(key, "opened_at", str(time.time()))
        BREAKER_OPEN.labels(provider, model).set(1)
        client.delete(f"{key}:probe")
