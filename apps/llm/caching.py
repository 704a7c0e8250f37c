"""Exact answer caches: L1 in-process LRU, L2 Redis, L4 PostgreSQL (durable). All tenant-scoped:
the schema is part of every L1 and L2 key, and L4 lives in the organization's own schema."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from cachetools import LRUCache
from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.llm.models import CachedResponse, SemanticCacheEntry
from cognitionos.redis import redis_client

# Everything that changes the answer is in the key; these fields do not.
_NOT_IN_KEY = frozenset({"stream", "stream_options", "user", "max_cost_usd", "cache", "policy_min_quality"})


@dataclass(frozen=True)
class CachedAnswer:
    body: dict[str, Any]
    cost_usd: Decimal
    layer: str


def cache_key(*, model: str, payload: dict[str, Any]) -> str:
    material = {"model": model, **{k: v for k, v in payload.items() if k not in _NOT_IN_KEY}}
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class _L1:
    def __init__(self) -> None:
        self._entries: LRUCache[tuple[str, str], tuple[float, dict[str, Any], Decimal]] = LRUCache(
            maxsize=settings.LLM_L1_CACHE_ENTRIES
        )
        self._lock = threading.Lock()

    def get(self, schema: str, key: str) -> tuple[dict[str, Any], Decimal] | None:
        with self._lock:
            entry = self._entries.get((schema, key))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1], entry[2]

    def put(self, schema: str, key: str, body: dict[str, Any], cost: Decimal, ttl: int) -> None:
        with self._lock:
            self._entries[(schema, key)] = (time.monotonic() + ttl, body, cost)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def forget_schema(self, schema: str) -> None:
        with self._lock:
            for entry in [entry for entry in self._entries if entry[0] == schema]:
                self._entries.pop(entry, None)


l1 = _L1()


def _l2_key(schema: str, key: str) -> str:
    return f"llm:cache:{schema}:{key}"


def cache_get(*, schema: str, key: str) -> CachedAnswer | None:
    hit = l1.get(schema, key)
    if hit is not None:
        return CachedAnswer(body=hit[0], cost_usd=hit[1], layer="l1")
    raw = redis_client().get(_l2_key(schema, key))
    if raw is not None:
        stored = json.loads(raw)
        ttl = max(1, int(redis_client().ttl(_l2_key(schema, key)) or 1))
        l1.put(schema, key, stored["body"], Decimal(stored["cost"]), ttl)
        return CachedAnswer(body=stored["body"], cost_usd=Decimal(stored["cost"]), layer="l2")
    row = (
        CachedResponse.objects.filter(key=key, expires_at__gt=timezone.now())
        .only("response", "cost_usd", "expires_at")
        .first()
    )
    if row is not None:
        ttl = max(1, int((row.expires_at - timezone.now()).total_seconds()))
        _fill_fast_layers(schema, key, row.response, row.cost_usd, ttl)
        return CachedAnswer(body=row.response, cost_usd=row.cost_usd, layer="l4")
    return None


def _fill_fast_layers(schema: str, key: str, body: dict[str, Any], cost: Decimal, ttl: int) -> None:
    l1.put(schema, key, body, cost, ttl)
    redis_client().set(_l2_key(schema, key), json.dumps({"body": body, "cost": str(cost)}), ex=ttl)


def cache_put(*, schema: str, key: str, model_name: str, body: dict[str, Any], cost: Decimal, ttl: int | None) -> None:
    """Store a complete, successful answer in every layer (the caller never passes errors or cut-offs)."""
    ttl = ttl or settings.LLM_CACHE_TTL_S
    _fill_fast_layers(schema, key, body, cost, ttl)
    CachedResponse.objects.update_or_create(
        key=key,
        defaults={
            "model_name": model_name,
            "response": body,
            "cost_usd": cost,
            "expires_at": timezone.now() + dt.timedelta(seconds=ttl),
        },
    )


def cache_content_delete(*, schema: str, created_before: dt.datetime | None = None) -> int:
    """Delete stored answers of the organization whose schema the connection is on: expired ones,
    those created before `created_before`, or (None) all of them, in every layer. Returns the
    number of durable rows deleted. L2 entries expire by themselves within their TTL, which is
    never longer than the retention; deleting everything also drops them (and this process's L1)."""
    now = timezone.now()
    deleted = 0
    for model in (CachedResponse, SemanticCacheEntry):
        rows = model.objects.all()
        if created_before is not None:
            rows = rows.filter(models.Q(expires_at__lte=now) | models.Q(created_at__lt=created_before))
        deleted += rows.delete()[0]
    if created_before is None:
        client = redis_client()
        keys = list(client.scan_iter(_l2_key(schema, "*"), count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        l1.forget_schema(schema)
    return deleted
