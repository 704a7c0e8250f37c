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


# The web servers the benchmarks can start, by name (bench/gateway.py --server): Granian as the
# product runs it (cognitionos.web), and gunicorn gthread, the server before it, at the same
# WEB_PROCESSES processes x WEB_THREADS threads (2 x 8 unless the environment says otherwise).
SERVERS = ("gunicorn", "granian")


def web_command(server: str, port: int) -> list[str]:
    """The command line of `server` on 127.0.0.1:`port`, with no access log."""
    if server == "granian":
        return [sys.executable, "-m", "cognitionos.web", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    if server == "gunicorn":
        return [
            *(sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--keep-alive", "5"),
            *("--workers", os.environ.get("WEB_PROCESSES", "2"), "--threads", os.environ.get("WEB_THREADS", "8")),
            *("--bind", f"127.0.0.1:{port}", "--access-logfile", "/dev/null", "cognitionos.wsgi:application"),
        ]
    raise ValueError(f"unknown server {server!r}; one of {SERVERS}")


def web_start(*, port: int, env: dict[str, str], server: str = "granian") -> subprocess.Popen[bytes]:
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


def queue_purge(queue: str) -> int:
    """Drop the messages waiting in a broker queue (run messages no worker of the bench will take)."""
    from cognitionos.celery import app

    with app.connection_for_write() as connection:
        return int(connection.default_channel.queue_purge(queue) or 0)  # type: ignore[attr-defined]


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


def _stat(pid: int) -> list[str]:
    """A process's /proc stat fields after its name (state, parent, ...); none if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """CPU seconds (user + system, all threads) of a process so far, with `reaped` those of its
    children that ended too; 0 if it is gone."""
    fields = _stat(pid)
    if not fields:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def process_tree(parent: int) -> list[int]:
    """A process and its children (a web server's master and its workers, say)."""
    return [parent, *_children(parent)]


def _children(parent: int) -> list[int]:
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [pid for pid in pids if (fields := _stat(pid)) and int(fields[1]) == parent]


class CpuMeter:
    """CPU time spent by each part of a measured run, per unit of work: the processes named (worker
    or web processes, say), the bench's embedded PostgreSQL (its server process, its backends, and
    the backends that ended) and Redis, and this process (submitters, clients, the fake provider).
    On a shared, noisy machine CPU per unit is far steadier than a rate, so a change shows in it
    that the rate hides; two cores bound the rate at 2 / (total CPU per unit)."""

    def __init__(self, processes: dict[str, list[int]]) -> None:
        from cognitionos.embedded import EmbeddedPostgres, EmbeddedRedis

        postgres, redis = EmbeddedPostgres(ROOT / ".data" / "bench"), EmbeddedRedis(ROOT / ".data" / "bench")
        # None where DATABASE_URL / REDIS_URL point at servers of their own: not counted.
        self.postmaster = postgres.pid() if os.environ["DATABASE_URL"].startswith(postgres.url("")) else None
        self.redis = redis.pid() if os.environ["REDIS_URL"].startswith(f"unix://{redis.socket}") else None
        self.processes = processes
        self.started = self._read()

    def _read(self) -> dict[str, float]:
        spent = {name: sum(_cpu_seconds(pid) for pid in pids) for name, pids in self.processes.items()}
        spent["this process"] = _cpu_seconds(os.getpid())
        if self.postmaster is not None:
            spent["postgres"] = _cpu_seconds(self.postmaster, reaped=True) + sum(
                _cpu_seconds(pid) for pid in _children(self.postmaster)
            )
        if self.redis is not None:
            spent["redis"] = _cpu_seconds(self.redis)
        return spent

    def line(self, units: int, unit: str = "job") -> str:
        """CPU per unit since the meter started, by part, and in all."""
        ended = self._read()
        spent = {name: ended[name] - self.started[name] for name in ended}
        parts = ", ".join(f"{name} {seconds / units * 1000:.2f} ms" for name, seconds in spent.items())
        return f"CPU per {unit}: {parts}; in all {sum(spent.values()) / units * 1000:.2f} ms"
