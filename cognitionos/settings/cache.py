"""Redis: Django's cache (tenant-scoped keys) and the client our own code uses."""

from .env import env_str

REDIS_URL = env_str("REDIS_URL")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        # Without the tenant in the key, organizations read each other's cached data (allauth's
        # rate-limit counters excepted: they are platform-wide, see apps.accounts.cache).
        "KEY_FUNCTION": "apps.accounts.cache.make_key",
        "KEY_PREFIX": "cache",
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.db"
