"""Progress streams (apps.work.progress): event latency and database reads with N streams open.

    .venv/bin/python bench/progress.py [--streams 20] [--idle 15] [--gap-ms 20]

N jobs, each followed by an open stream consumed on a thread of its own (as a web server thread
serves one), in two modes, one after the other in the same run:

- pub/sub: the runtime's notices on Redis wake the stream; a fallback re-read every 5 s;
- polling: Redis unreachable for progress, so every stream reads the database every 0.5 s (the
  degraded mode);
- before: the code this replaced, apps/api/events.py as of commit BEFORE (read from git; skipped
  where there is no git history): a read every 0.5 s.

For each: database queries per stream-minute while nothing changes (`--idle` seconds, counted on the
streams' threads), then the latency from a state change (the claim of each job, then its finish,
one job every `--gap-ms`; timed from just before the call) to the event arriving on its stream:
p50, p95, max. Ratios between the modes are printed at the end: the machine is shared, so only
figures of one run are compared.

Runs on its own database in the bench servers (.data/bench). Not a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._setup import django_on_fresh_database  # noqa: E402 - after the path is set

DATABASE = "cognitionos_bench_progress"
# The last commit with the polling stream (apps/api/events.py), the "before" of this benchmark.
BEFORE = "6d60d69^"


class Reader:
    """One open stream, read on its own thread: when each chunk arrived, and the queries it made."""

    def __init__(self, response: Any) -> None:
        self.chunks: list[tuple[float, str]] = []
        self.queries = 0
        self.ended = threading.Event()
        threading.Thread(target=self._read, args=(response,), daemon=True).start()

    def _read(self, response: Any) -> None:
        from django.db import connection

        def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            self.queries += 1
            return execute(sql, params, many, context)

        try:
            with connection.execute_wrapper(count):
                for chunk in response.streaming_content:
                    self.chunks.append((time.monotonic(), bytes(chunk).decode()))
        finally:
            response.close()
            connection.close()
            self.ended.set()

    def arrival(self, text: str, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for arrived, chunk in list(self.chunks):
                if text in chunk:
                    return arrived
            time.sleep(0.002)
        raise SystemExit(f"no event with {text!r} within {timeout} s")


# (organization, job id, poll) -> the streaming response
Opener = Callable[[Any, Any, Any], Any]


def current_stream(organization: Any, job_id: Any, poll: Any) -> Any:
    from apps.work.progress import progress_stream

    return progress_stream(organization=organization, topic="job", object_id=job_id, poll=poll)


def before_stream() -> Opener | None:
    """apps/api/events.py's event_stream as of BEFORE, or None without the git history."""
    shown = subprocess.run(
        ["git", "show", f"{BEFORE}:apps/api/events.py"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if shown.returncode:
        return None
    path = Path(tempfile.mkdtemp()) / "events_before.py"
    path.write_text(shown.stdout)
    spec = importlib.util.spec_from_file_location("events_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda organization, job_id, poll: module.event_stream(organization=organization, poll=poll)


def run_mode(organization: Any, opener: Opener, *, streams: int, idle: float, gap: float) -> dict[str, float]:
    from apps.jobs.api import JobOutput
    from apps.jobs.models import Job, JobStatus
    from apps.jobs.services import JOB
    from apps.tenants.connection import organization_schema
    from apps.work.services import work_claim, work_finish

    with organization_schema(organization):
        jobs = [Job.objects.create(request={"model": "gpt-4o-mini", "messages": []}) for _ in range(streams)]

    def stream(job_id: Any) -> Any:
        def poll() -> tuple[list[tuple[str, str, Any]], bool] | None:
            job = Job.objects.filter(pk=job_id).first()
            return None if job is None else ([("job", "status", JobOutput(job).data)], job.is_finished)

        return opener(organization, job_id, poll)

    readers = [Reader(stream(job.pk)) for job in jobs]
    for reader in readers:
        reader.arrival('"status": "queued"')
    before = sum(reader.queries for reader in readers)
    opened = time.monotonic()
    time.sleep(idle)
    idle_queries = sum(reader.queries for reader in readers) - before
    per_stream_minute = idle_queries / streams / (time.monotonic() - opened) * 60

    claimed: list[Any] = []
    latencies: list[float] = []
    with organization_schema(organization):
        changed_at = []
        for job in jobs:
            changed_at.append(time.monotonic())
            claimed.append(work_claim(organization=organization, kind=JOB, item_id=job.pk))
            time.sleep(gap)
        latencies += [r.arrival('"status": "running"') - t for r, t in zip(readers, changed_at, strict=True)]
        changed_at = []
        for item in claimed:
            changed_at.append(time.monotonic())
            work_finish(
                organization=organization,
                kind=JOB,
                item=item,
                status=JobStatus.SUCCEEDED,
                values={"result": {"text": "done"}},
                attempt=item.attempts,
            )
            time.sleep(gap)
        latencies += [r.arrival('"status": "succeeded"') - t for r, t in zip(readers, changed_at, strict=True)]
    for reader in readers:
        reader.ended.wait(30)
    ms = sorted(latency * 1000 for latency in latencies)
    return {
        "queries_per_stream_minute": per_stream_minute,
        "p50_ms": statistics.median(ms),
        "p95_ms": ms[int(len(ms) * 0.95) - 1],
        "max_ms": ms[-1],
        "ended": sum(reader.ended.is_set() for reader in readers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--idle", type=float, default=15.0, help="seconds with nothing changing (fallback: 5 s)")
    parser.add_argument("--gap-ms", type=float, default=20.0, help="between two state changes")
    args = parser.parse_args()
    # Every stream holds a long-response slot and, while polling, a pooled database connection.
    os.environ.setdefault("WEB_THREADS", str(args.streams + 4))
    os.environ.setdefault("DATABASE_POOL_MAX_SIZE", str(args.streams + 10))
    django_on_fresh_database(DATABASE)

    from apps.accounts.principals import Principal
    from apps.tenants.services import organization_create
    from apps.work import progress

    organization = organization_create(
        slug="progress", name="Progress bench", owner_email="bench@example.com", actor=Principal.system("bench")
    )
    measure = {"streams": args.streams, "idle": args.idle, "gap": args.gap_ms / 1000}
    results = {}
    before = before_stream()
    if before is not None:
        results["before"] = run_mode(organization, before, **measure)
    else:
        print(f"(no git history: the 'before' mode, {BEFORE}:apps/api/events.py, is skipped)")
    results["pub/sub"] = run_mode(organization, current_stream, **measure)
    # Redis unreachable for progress (nothing listens on port 1): the streams poll.
    dead = progress.redis_client_for("redis://127.0.0.1:1/0")
    progress._redis = lambda: dead
    results["polling"] = run_mode(organization, current_stream, **measure)

    print(f"{args.streams} streams open, {args.idle:.0f} s idle, a state change every {args.gap_ms:.0f} ms")
    print(f"{'mode':<10} {'queries/stream-min':>19} {'latency p50':>12} {'p95':>9} {'max':>9} {'ended':>6}")
    for mode, r in results.items():
        print(
            f"{mode:<10} {r['queries_per_stream_minute']:>19.1f} {r['p50_ms']:>10.1f}ms {r['p95_ms']:>7.1f}ms"
            f" {r['max_ms']:>7.1f}ms {int(r['ended']):>3}/{args.streams}"
        )
    new = results["pub/sub"]
    for name, old in results.items():
        if name == "pub/sub":
            continue
        queries = new["queries_per_stream_minute"] / old["queries_per_stream_minute"]
        print(
            f"pub/sub / {name}: queries per stream-minute x{queries:.3f}, latency p50"
            f" x{new['p50_ms'] / old['p50_ms']:.3f}, p95 x{new['p95_ms'] / old['p95_ms']:.3f}"
        )


if __name__ == "__main__":
    main()
