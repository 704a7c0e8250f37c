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


def django_on_fresh_database(name: str, *, postgres_options: dict[str, str] | None = None) -> None:
    """Start (or reuse) the servers in .data/bench, recreate database `name`, set up Django, migrate,
    and clear the engine's Redis state, so one run never sees another's data. `postgres_options`
    apply to a bench PostgreSQL started here (not to one already running)."""
    django_on_database(name, fresh=True, postgres_options=postgres_options)


def django_on_database(name: str, *, fresh: bool, postgres_options: dict[str, str] | None = None) -> None:
    """As django_on_fresh_database; with `fresh` false, database `name` is kept if it exists (a
    benchmark's expensive set-up, built once)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cognitionos.settings.development")
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # a log line per call would be measured too
    from cognitionos.embedded import services_attach

    services = services_attach(data_dir=ROOT / ".data" / "bench", postgres_options=postgres_options)
    atexit.register(services.stop_owned)
    import psycopg

    server = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    with psycopg.connect(server + "/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None
        if fresh or not exists:
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


# The production web servers the benchmarks can start, by name (bench/gateway.py --server).
SERVERS = ("gunicorn", "granian")


def web_command(server: str, port: int) -> list[str]:
    """The command line of `server` with the production configuration on 127.0.0.1:`port`: both
    run WEB_PROCESSES processes x WEB_THREADS threads (2 x 8 unless the environment says otherwise).
    Granian takes at most as many requests into a process as it has threads (`--backpressure`):
    with its default (512) requests queued inside the process, and the p50 of a miss and of a hit
    measured here was about twice as high."""
    if server == "gunicorn":
        return [
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
        ]
    if server == "granian":
        return [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "wsgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            os.environ.get("WEB_PROCESSES", "2"),
            "--blocking-threads",
            os.environ.get("WEB_THREADS", "8"),
            "--backpressure",
            os.environ.get("WEB_THREADS", "8"),
            "--no-access-log",
            "--log-level",
            "warning",
            "cognitionos.wsgi:application",
        ]
    raise ValueError(f"unknown server {server!r}; one of {SERVERS}")


def web_start(*, server: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`server` (gunicorn or granian) on 127.0.0.1:`port`, answering /health/live when returned."""
    process = subprocess.Popen(web_command(server, port), cwd=ROOT, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1)
            break
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{server} exited with status {process.returncode}") from None
            time.sleep(0.2)
    return process


def web_stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def gunicorn_start(*, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The production web server configuration on 127.0.0.1:`port`, answering /health/live when returned."""
    return web_start(server="gunicorn", port=port, env=env)


def gunicorn_stop(server: subprocess.Popen[bytes]) -> None:
    web_stop(server)


def unthrottled_plan(code: str = "bench", **limits: int) -> None:
    """A plan whose rate limits (still checked, as in production) sit above anything a benchmark can
    send, with an "Enterprise"-like version; `limits` overrides its fields (max_concurrent_jobs=...)."""
    from apps.billing.models import Plan, PlanVersion

    plan = Plan.objects.create(code=code, name="Benchmark")
    enterprise = PlanVersion.objects.filter(plan__code="enterprise").order_by("-number").first()
    assert enterprise is not None, "the seeded Enterprise plan is missing"
    fields = {
        field.name: getattr(enterprise, field.name)
        for field in PlanVersion._meta.concrete_fields
        if field.name not in ("id", "plan", "number", "created_at")
    }
    fields.update(requests_per_minute=2_000_000_000, tokens_per_minute=2_000_000_000, **limits)
    PlanVersion.objects.create(plan=plan, number=1, **fields)
