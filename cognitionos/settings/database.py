"""PostgreSQL through django-tenants' engine, with a bounded psycopg connection pool."""

import dj_database_url

from .env import env_int, env_str

_parsed = dj_database_url.parse(env_str("DATABASE_URL"))

DATABASES = {
    "default": {
        **_parsed,
        "ENGINE": "cognitionos.db_tenants",
        # Pooled connections are reused across requests; CONN_MAX_AGE must stay 0 with a pool.
        "CONN_MAX_AGE": 0,
        "OPTIONS": {
            **_parsed.get("OPTIONS", {}),
            # Django binds parameters on the client, so its statements are never prepared; the few
            # hot statements that bind on the server (the call's reservation and settlement, the
            # vector search) are prepared on a connection after this many runs on it.
            "prepare_threshold": 5,
            "pool": {
                "min_size": env_int("DATABASE_POOL_MIN_SIZE", 1),
                "max_size": env_int("DATABASE_POOL_MAX_SIZE", 20),
                "timeout": env_int("DATABASE_POOL_TIMEOUT", 10),
            },
        },
    }
}
# django-tenants wraps this engine: django-prometheus's PostgreSQL engine (Django's, with every
# statement counted and timed: django_db_execute_total, django_db_query_duration_seconds), its cursor
# class made once (cognitionos/db_engine) — tests/ops/test_metrics_http_db.py shows the counts on a
# tenant's connection and the schema switching intact.
ORIGINAL_BACKEND = "cognitionos.db_engine"
