"""What every benchmark starts with: the bench servers and a fresh, migrated database of its own."""

from __future__ import annotations

import atexit
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def django_on_fresh_database(name: str) -> None:
    """Start (or reuse) the servers in .data/bench, recreate database `name`, set up Django, migrate,
    and clear the engine's Redis state, so one run never sees another's data."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cognitionos.settings.development")
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # a log line per call would be measured too
    from cognitionos.embedded import services_attach

    services = services_attach(data_dir=ROOT / ".data" / "bench")
    atexit.register(services.stop_owned)
    import psycopg

    server = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    with psycopg.connect(server + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    os.environ["DATABASE_URL"] = f"{server}/{name}"
    import django

    django.setup()
    from django.core.management import call_command

    from cognitionos.redis import redis_client

    call_command("migrate", interactive=False, verbosity=0)
    for key in redis_client().scan_iter("llm:*", count=1000):
        redis_client().delete(key)
