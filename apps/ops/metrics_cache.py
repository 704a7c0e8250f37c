"""Django's Redis cache with django-prometheus's cache series (django_cache_get_total, hits, misses,
failures). django-prometheus's own `NativeRedisCache` does the same but its module imports
django-redis, which this project does not use; this is its `get`, over Django's built-in backend,
so KEY_FUNCTION (the tenant-scoped keys) and every other behaviour stay Django's.

The `backend` label names the cache: `redis` (the default cache) or `redis_sessions`."""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache
from django_prometheus.cache.metrics import (  # type: ignore[import-untyped]
    django_cache_get_fail_total,
    django_cache_get_total,
    django_cache_hits_total,
    django_cache_misses_total,
)


class MeteredRedisCache(RedisCache):
    metrics_backend = "redis"

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        label = self.metrics_backend
        django_cache_get_total.labels(backend=label).inc()
        try:
            result = super().get(key, default=None, version=version)
        except Exception:
            django_cache_get_fail_total.labels(backend=label).inc()
            raise
        if result is None:
            django_cache_misses_total.labels(backend=label).inc()
            return default
        django_cache_hits_total.labels(backend=label).inc()
        return result


class MeteredSessionsRedisCache(MeteredRedisCache):
    metrics_backend = "redis_sessions"
