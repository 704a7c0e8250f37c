"""The platform's Redis client: one connection pool per process, shared by every thread."""

import redis
from django.conf import settings

from cognitionos.thread_safe_cache import thread_safe_cache


@thread_safe_cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
    )
