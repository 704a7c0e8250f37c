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
from django.db import connection, models
from django.utils import timezone

from apps.llm.models import CachedResponse, CallContent, SemanticCacheEntry
from apps.llm.selectors import EngineSettings, llm_settings_of_schema
from apps.tenants.connection import server_binding_cursor
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
    """Per process. Each entry carries the content generation of its organization's settings when
    it was stored; an entry of another generation is never served. When a process first sees an
    organization's new generation it drops all of that organization's entries here."""

    def __init__(self) -> None:
        self._entries: LRUCache[tuple[str, str], tuple[float, str, dict[str, Any], Decimal]] = LRUCache(
            maxsize=settings.LLM_L1_CACHE_ENTRIES
        )
        self._generations: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, schema: str, key: str, generation: str | None = None) -> tuple[dict[str, Any], Decimal] | None:
        """The entry, if live and (given a generation) stored under that generation."""
        with self._lock:
            if generation is not None and self._generations.get(schema, generation) != generation:
                self._forget_schema_locked(schema)
            entry = self._entries.get((schema, key))
        if entry is None or entry[0] < time.monotonic() or (generation is not None and entry[1] != generation):
            return None
        return entry[2], entry[3]

    def put(
        self, schema: str, key: str, body: dict[str, Any], cost: Decimal, ttl: int, *, generation: str = ""
    ) -> None:
        with self._lock:
            if self._generations.get(schema, generation) != generation:
                self._forget_schema_locked(schema)
            self._generations[schema] = generation
            self._entries[(schema, key)] = (time.monotonic() + ttl, generation, body, cost)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._generations.clear()

    def forget_schema(self, schema: str) -> None:
        with self._lock:
            self._forget_schema_locked(schema)

    def _forget_schema_locked(self, schema: str) -> None:
        for entry in [entry for entry in self._entries if entry[0] == schema]:
            self._entries.pop(entry, None)
        self._generations.pop(schema, None)


l1 = _L1()


def _l2_key(schema: str, key: str) -> str:
    return f"llm:cache:{schema}:{key}"


# Whether the organization may have L4 rows: "1" yes (read L4 on a miss), "0" none (skip the query),
# absent unknown (one cheap EXISTS decides, for a minute). Read with the L2 entry, in its round
# trip; every L4 write sets "1" first, so a "0" can only outlive a write by a race of a minute at
# most, during which the answer is in L2 anyway (filled with the row, for as long).
_L4_FLAG_TTL_S = 60


def _l4_flag_key(schema: str) -> str:
    return f"llm:cache-l4:{schema}"


def _retention_left(policy: EngineSettings, created_at: dt.datetime, expires_at: dt.datetime) -> int:
    """Seconds a stored answer may still be served: until it expires or leaves the retention."""
    until = min(expires_at, created_at + dt.timedelta(days=policy.retention_days))
    return int((until - timezone.now()).total_seconds())


def cache_get(*, schema: str, key: str) -> CachedAnswer | None:
    """The stored answer for `key`, from the fastest layer that has it under the organization's
    current content policy (none in no-content mode; nothing stored under an earlier policy)."""
    # From the per-process settings cache the engine has just read: no Redis round trip on an L1 hit.
    policy = llm_settings_of_schema(schema=schema)
    if not policy.store_content:
        return None
    generation = policy.content_generation
    hit = l1.get(schema, key, generation)
    if hit is not None:
        return CachedAnswer(body=hit[0], cost_usd=hit[1], layer="l1")
    client = redis_client()
    raw, l4_flag = client.mget([_l2_key(schema, key), _l4_flag_key(schema)])
    if raw is not None:
        stored = json.loads(raw)
        if stored.get("generation", "") == generation:
            ttl = max(1, int(client.ttl(_l2_key(schema, key)) or 1))
            l1.put(schema, key, stored["body"], Decimal(stored["cost"]), ttl, generation=generation)
            return CachedAnswer(body=stored["body"], cost_usd=Decimal(stored["cost"]), layer="l2")
        # Stored under an earlier policy (by a process that had not seen the change yet): dead.
        client.delete(_l2_key(schema, key))
    return _l4_get(schema, key, policy, l4_flag)


_L4_GET = """
SELECT response, cost_usd, created_at, expires_at FROM {schema}.llm_cachedresponse WHERE key = %s AND expires_at > %s
"""


def _l4_get(schema: str, key: str, policy: EngineSettings, flag: bytes | str | None) -> CachedAnswer | None:
    if flag in (b"0", "0"):
        return None
    if flag is None:
        any_rows = CachedResponse.objects.exists()
        redis_client().set(_l4_flag_key(schema), "1" if any_rows else "0", ex=_L4_FLAG_TTL_S, nx=True)
        if not any_rows:
            return None
    # By the schema's name, on a statement prepared once per connection: it is often the request's
    # first statement, and through the ORM it paid a `SET search_path` round trip and the planning.
    with server_binding_cursor(on_search_path=False) as cursor:
        cursor.execute(_L4_GET.format(schema=connection.ops.quote_name(schema)), [key, timezone.now()])
        row = cursor.fetchone()
    if row is not None:
        response, cost, created_at, expires_at = row
        body = json.loads(response) if isinstance(response, str) else response
        ttl = _retention_left(policy, created_at, expires_at)
        if ttl > 0:
            _fill_fast_layers(schema, key, body, cost, ttl, generation=policy.content_generation)
            return CachedAnswer(body=body, cost_usd=cost, layer="l4")
    return None


def _fill_fast_layers(
    schema: str, key: str, body: dict[str, Any], cost: Decimal, ttl: int, *, generation: str, l4: bool = False
) -> None:
    """L1 and L2; `l4`: an L4 row is being written too, which the flag says first (same round trip)."""
    l1.put(schema, key, body, cost, ttl, generation=generation)
    pipe = redis_client().pipeline(transaction=False)
    if l4:
        pipe.set(_l4_flag_key(schema), "1", ex=_L4_FLAG_TTL_S)
    pipe.set(_l2_key(schema, key), json.dumps({"body": body, "cost": str(cost), "generation": generation}), ex=ttl)
    pipe.execute()


_L4_PUT = """
INSERT INTO {schema}.llm_cachedresponse (key, model_name, response, cost_usd, created_at, expires_at)
VALUES (%s, %s, %s::jsonb, %s, %s, %s)
ON CONFLICT (key) DO UPDATE SET model_name = EXCLUDED.model_name, response = EXCLUDED.response,
    cost_usd = EXCLUDED.cost_usd, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
"""


def cache_put(*, schema: str, key: str, model_name: str, body: dict[str, Any], cost: Decimal, ttl: int | None) -> None:
    """Store a complete, successful answer in every layer (the caller never passes errors or cut-offs),
    for no longer than the organization's retention; nothing in no-content mode."""
    policy = llm_settings_of_schema(schema=schema)
    if not policy.store_content:
        return
    ttl = min(ttl or settings.LLM_CACHE_TTL_S, policy.retention_days * 86400)
    _fill_fast_layers(schema, key, body, cost, ttl, generation=policy.content_generation, l4=True)
    now = timezone.now()
    # One statement (update_or_create took a transaction of three or four round trips); a new
    # answer for the key starts its retention again.
    with server_binding_cursor(on_search_path=False) as cursor:
        cursor.execute(
            _L4_PUT.format(schema=connection.ops.quote_name(schema)),
            [key, model_name[:100], json.dumps(body), cost, now, now + dt.timedelta(seconds=ttl)],
        )


def cache_fast_layers_drop(*, schema: str) -> None:
    """Drop the organization's L2 entries and this process's L1 entries. Other processes' L1
    entries die with the settings' generation (every settings change makes a new one)."""
    client = redis_client()
    keys = [*client.scan_iter(_l2_key(schema, "*"), count=1000), _l4_flag_key(schema)]
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    l1.forget_schema(schema)


def cache_content_delete(*, schema: str, created_before: dt.datetime | None = None) -> int:
    """Delete stored answers (the caches' and the request log's call content) of the organization
    whose schema the connection is on: expired ones, those created before `created_before`, or
    (None) all of them, in every layer; what stays gets
    no longer than `now - created_before` to live. Returns the number of durable rows deleted.
    L2 entries expire by themselves within their TTL, which is never longer than the retention;
    deleting everything also drops them (and this process's L1)."""
    now = timezone.now()
    deleted = 0
    for model in (CachedResponse, SemanticCacheEntry):
        rows = model.objects.all()
        if created_before is not None:
            rows = rows.filter(models.Q(expires_at__lte=now) | models.Q(created_at__lt=created_before))
        deleted += rows.delete()[0]
        if created_before is not None:
            # A shortened retention: what was stored under the longer one expires with the new one.
            limit = models.F("created_at") + (now - created_before)
            model.objects.filter(expires_at__gt=limit).update(expires_at=limit)
    # The request log's prompts and answers (CallContent) go by the same rule (no expiry of their own).
    calls = CallContent.objects.all()
    if created_before is not None:
        calls = calls.filter(created_at__lt=created_before)
    deleted += calls.delete()[0]
    if created_before is None:
        cache_fast_layers_drop(schema=schema)
    return deleted
