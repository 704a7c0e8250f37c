"""Redis: Django's cache (tenant-scoped keys) and the client our own code uses."""

from .env import env_str

REDIS_URL = env_str("REDIS_URL")

CACHES = {
    # Django's RedisCache with django-prometheus's hit and miss counters (apps.ops.metrics_cache).
    "default": {
        "BACKEND": "apps.ops.metrics_cache.MeteredRedisCache",
        "LOCATION": REDIS_URL,
        # Without the tenant in the key, organizations read each other's cached data (allauth's
        # rate-limit counters excepted: they are platform-wide, see apps.accounts.cache).
        "KEY_FUNCTION": "apps.accounts.cache.make_key",
        "KEY_PREFIX": "cache",
    },
    # Sessions, by their random key alone: a session is one host's cookie, and the same key must
    # name the same session whichever schema the connection is on when it is read or written (a
    # per-schema copy could outlive a sign-out).
    "sessions": {
        "BACKEND": "apps.ops.metrics_cache.MeteredSessionsRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "session",
    },
}
# Sessions are read from Redis and written to both (the database stays the record): a portal request
# costs no session query. Nothing deletes sessions behind Django's back (sign-out flushes both).
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
SESSION_CACHE_ALIAS = "sessions"
