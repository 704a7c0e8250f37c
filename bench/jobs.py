"""Jobs end to end on real Celery workers (threads pool) against the fake provider.

    .venv/bin/python bench/jobs.py [--jobs 1500] [--seconds 10]

Prints:
- provider calls in flight in one worker process, with the fake provider at 1 s latency;
- jobs completed per second end to end (submitted from 8 threads, run by 2 worker processes, one
  per core), at 1 s and at 0 ms provider latency;
- API p95 and throughput of job submission (POST /api/v1/jobs) at 50 concurrent clients (wrk
  against gunicorn with the production configuration).

Runs on its own database in the bench servers (.data/bench). Not a test: compare within one run.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._setup import django_on_fresh_database, gunicorn_start, gunicorn_stop  # noqa: E402 - after the path is set
from bench.gateway import ensure_wrk  # noqa: E402

PORT = 18322
QUEUE = "cognitionos-bench-jobs"


def setup() -> tuple[Any, str]:
    os.environ["CELERY_TASK_DEFAULT_QUEUE"] = QUEUE
    django_on_fresh_database("cognitionos_bench_jobs")
    from decimal import Decimal

    from apps.accounts.principals import Principal
    from apps.apikeys.services import apikey_create
    from apps.billing.models import Plan
    from apps.llm.services import budget_set
    from apps.tenants.services import organization_create

    actor = Principal.system("bench")
    Plan.objects.create(
        code="bench",
        name="Benchmark",
        limits={"requests_per_minute": 10**7, "tokens_per_minute": 10**10, "max_concurrent_jobs": 2_000},
    )
    organization = organization_create(
        slug="jobs", name="Jobs bench", owner_email="bench@example.com", plan_code="bench", actor=actor
    )
    budget_set(
        organization=organization, scope="organization", period="day", limit_usd=Decimal(10**6), hard=True, actor=actor
    )
    key = apikey_create(organization=organization, name="bench", actor=actor).key
    return organization, key


def worker_env(base_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": base_url,
        "LOG_LEVEL": "WARNING",
        "DEBUG": "false",  # development settings keep every query in memory when DEBUG is on
        "DATABASE_POOL_MAX_SIZE": "20",
    }


def start_workers(count: int, concurrency: int, base_url: str) -> list[subprocess.Popen[bytes]]:
    from cognitionos.celery import app

    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "cognitionos",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(concurrency),
                "--queues",
                QUEUE,
                "--hostname",
                f"bench{number}@%h",
                "--loglevel",
                "ERROR",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=worker_env(base_url),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
        )
        for number in range(count)
    ]
    deadline = time.monotonic() + 60
    while len(app.control.ping(timeout=0.5) or []) < count and time.monotonic() < deadline:
        pass
    return workers


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        process.wait(timeout=60)


def submit_and_wait(
    organization: Any, count: int, timeout_s: float = 300, before_wait: Any = None
) -> tuple[float, int]:
    """Submit `count` jobs from 8 threads; seconds until the last one ended, and how many succeeded.
    `before_wait` runs between the submissions and the wait (starting the workers, say)."""
    from django.db import connection
    from django_tenants.utils import schema_context

    from apps.accounts.principals import Principal
    from apps.jobs.models import Job, JobStatus
    from apps.jobs.services import job_submit

    principal = Principal(kind="api_key", id="1", label="bench")

    def submit(number: int) -> None:
        with schema_context(organization.schema_name):
            job_submit(
                organization=organization,
                principal=principal,
                request={
                    "prompt": f"Question {number}",
                    "model": "gpt-4o-mini",
                    "max_tokens": 32,
                    "cache": {"skip": True},  # every job is a provider call
                },
            )
        connection.close()

    with schema_context(organization.schema_name):
        Job.objects.all().delete()
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(submit, range(count)))
    if before_wait is not None:
        started = time.monotonic()
        before_wait()
    with schema_context(organization.schema_name):
        while time.monotonic() - started < timeout_s:
            if not Job.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).exists():
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        succeeded = Job.objects.filter(status=JobStatus.SUCCEEDED).count()
    return elapsed, succeeded


def submission_latency(key: str, seconds: int, fake_url: str) -> str:
    binary = ensure_wrk()
    env = {**worker_env(fake_url), "DEBUG": "false", "DATABASE_POOL_MAX_SIZE": "10"}
    server = gunicorn_start(port=PORT, env=env)
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
    script.write(
        'wrk.method = "POST"\n'
        'wrk.body = [[{"prompt": "Benchmark question", "model": "gpt-4o-mini", "max_tokens": 32}]]\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
        'wrk.headers["Host"] = "localhost"\n'
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("p95_us %d\\n", latency:percentile(95)))\n'
        "end\n"
    )
    script.close()
    try:
        command = [binary, "-t", "2", "-c", "50", "--latency", "-s", script.name]
        url = f"http://127.0.0.1:{PORT}/api/v1/jobs"
        subprocess.run([*command, "-d", "2s", url], capture_output=True, check=True)  # warm-up
        output = subprocess.run([*command, "-d", f"{seconds}s", url], capture_output=True, text=True, check=True).stdout
    finally:
        gunicorn_stop(server)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"\s50%\s+([\d.]+\w+)", output)
    p95 = re.search(r"p95_us (\d+)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return (
        f"{float(rps.group(1)) if rps else 0:.0f} submissions/s, p50 {p50.group(1) if p50 else '?'}, "
        f"p95 {int(p95.group(1)) / 1000 if p95 else float('nan'):.1f}ms, non-2xx {errors.group(1) if errors else 0}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    organization, key = setup()
    from tests.support.fake_provider import FakeProvider

    with FakeProvider(latency_s=1.0) as fake:
        # The jobs wait in the queue first, so the worker's own pace is measured, not the submitters'.
        workers: list[subprocess.Popen[bytes]] = []
        try:
            fake.reset()
            elapsed, done = submit_and_wait(
                organization, 800, before_wait=lambda: workers.extend(start_workers(1, 400, fake.openai_base_url))
            )
            print(
                f"1 worker process (threads pool, 400 threads), provider at 1 s, 800 jobs queued: "
                f"{fake.max_in_flight} provider calls in flight at most; {done}/800 jobs in {elapsed:.1f} s"
            )
        finally:
            stop(workers)
        workers = start_workers(2, 150, fake.openai_base_url)
        try:
            elapsed, done = submit_and_wait(organization, args.jobs)
            print(
                f"2 worker processes x 150 threads, provider at 1 s:  {done / elapsed:6.1f} jobs/s end to end "
                f"({done}/{args.jobs} succeeded in {elapsed:.1f} s)"
            )
            fake.latency_s = 0.0
            elapsed, done = submit_and_wait(organization, args.jobs)
            print(
                f"2 worker processes x 150 threads, provider at 0 ms: {done / elapsed:6.1f} jobs/s end to end "
                f"({done}/{args.jobs} succeeded in {elapsed:.1f} s)"
            )
        finally:
            stop(workers)
        api = submission_latency(key, args.seconds, fake.openai_base_url)
        print(f"job submission API, 50 clients, {args.seconds} s: {api}")


if __name__ == "__main__":
    main()
