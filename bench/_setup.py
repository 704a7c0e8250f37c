"""What every benchmark starts with: the bench servers and a fresh, migrated database of its own."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
import urllib.request
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


def gunicorn_start(*, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The production web server configuration on 127.0.0.1:`port`, answering /health/live when returned."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:cognitionos.gunicorn_conf",
            "cognitionos.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--access-logfile",
            "/dev/null",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    return server


def gunicorn_stop(server: subprocess.Popen[bytes]) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)
