"""Jobs end to end on real Celery workers (threads pool) against the fake provider.

    .venv/bin/python bench/jobs.py [--jobs 1500] [--seconds 10] [--part all|submission]
                                   [--rate 200] [--sweep 100,200,300,400] [--port 18322]
                                   [--server granian|gunicorn]

Prints:
- provider calls in flight in one worker process, with the fake provider at 1 s latency;
- jobs completed per second end to end (submitted from 8 threads, run by 2 worker processes, one
  per core), at 1 s and at 0 ms provider latency; at 0 ms, the CPU time per job of each part
  (workers, PostgreSQL, Redis, this process), which is steadier than the rate on a shared machine;
- API p95 and throughput of job submission (POST /api/v1/jobs) at 50 concurrent clients (wrk
  against the production web server, cognitionos.web): closed loop, each client waits for its
  answer before it sends again, so a slow server is offered less and its queueing hides;
- job submission at a fixed offered rate (open loop, `--rate` per second for `--seconds`): requests
  leave on a fixed timetable whatever the answers do, and each one's latency counts from its
  scheduled send time, so time spent waiting for a free connection (queueing) is counted. p50, p95,
  p99, the achieved rate and non-2xx answers;
- a sweep over `--sweep` rates: the highest rate held with p95 <= 100 ms (and at least 95% of the
  offered rate achieved, no errors).

During the submission runs the organization's audit chainer runs in a process of its own, as a
worker would run its task after each commit (where the code chains asynchronously), and its
backlog is printed. `--part submission` runs only the submission measurements.

Runs on its own database in the bench servers (.data/bench). Not a test: compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._setup import (  # noqa: E402 - after the path is set
    SERVERS,
    CpuMeter,
    django_on_fresh_database,
    process_tree,
    queue_purge,
    unthrottled_plan,
    web_start,
    web_stop,
)
from bench.gateway import ensure_wrk  # noqa: E402

PORT = 18322
SERVER = "granian"
QUEUE = "cognitionos-bench-jobs"
DATABASE = "cognitionos_bench_jobs"
JOB_BODY = b'{"prompt": "Benchmark question", "model": "gpt-4o-mini", "max_tokens": 32}'
# The sweep's criterion, as issue 11 states it.
SWEEP_P95_MS = 100.0


def jobs_queue_purge() -> int:
    """Drop the run messages still queued for this bench's jobs. The submission measurements run
    with no worker and delete their jobs after each step, leaving their messages behind: thousands
    of them, for jobs of a database the next run recreates, which that run's first worker then
    took one by one (a claim that finds no row, and a check for a dead run) before the jobs it was
    meant to measure (the occasional ~28 s before a fresh worker's first claim)."""
    return queue_purge(QUEUE)


def setup() -> tuple[Any, str]:
    os.environ["CELERY_TASK_DEFAULT_QUEUE"] = QUEUE
    django_on_fresh_database(DATABASE)
    jobs_queue_purge()
    from decimal import Decimal

    from apps.accounts.principals import Principal
    from apps.apikeys.services import apikey_create
    from apps.llm.services import budget_set
    from apps.tenants.services import organization_create

    actor = Principal.system("bench")
    unthrottled_plan(max_concurrent_jobs=2_000)
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
        # Hundreds of threads share 20 connections: each call gives its connection back while it
        # waits on the provider, and a settlement waits for one as long as its hold lives.
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


def submission_server(fake_url: str) -> subprocess.Popen[bytes]:
    env = {**worker_env(fake_url), "DEBUG": "false", "DATABASE_POOL_MAX_SIZE": "10"}
    return web_start(port=PORT, env=env, server=SERVER)


def submission_latency(key: str, seconds: int) -> str:
    """Closed loop: wrk's 50 connections each send their next request when the last one answered."""
    binary = ensure_wrk()
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
    script.write(
        'wrk.method = "POST"\n'
        f"wrk.body = [[{JOB_BODY.decode()}]]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
        'wrk.headers["Host"] = "localhost"\n'
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("p95_us %d\\n", latency:percentile(95)))\n'
        "end\n"
    )
    script.close()
    command = [binary, "-t", "2", "-c", "50", "--timeout", "30s", "--latency", "-s", script.name]
    url = f"http://127.0.0.1:{PORT}/api/v1/jobs"
    subprocess.run([*command, "-d", "2s", url], capture_output=True, check=True)  # warm-up
    output = subprocess.run([*command, "-d", f"{seconds}s", url], capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not rps or not float(rps.group(1)):
        print(output)  # what wrk saw: socket errors, timeouts
    p50 = re.search(r"\s50%\s+([\d.]+\w+)", output)
    p95 = re.search(r"p95_us (\d+)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    timeouts = re.search(r"Socket errors:.*timeout (\d+)", output)
    return (
        f"{float(rps.group(1)) if rps else 0:.0f} submissions/s, p50 {p50.group(1) if p50 else '?'}, "
        f"p95 {int(p95.group(1)) / 1000 if p95 else float('nan'):.1f}ms, non-2xx {errors.group(1) if errors else 0}, "
        f"timeouts (30 s) {timeouts.group(1) if timeouts else 0}"
    )


@dataclass(frozen=True)
class OpenLoopResult:
    offered: float
    achieved: float  # answers per second over the window from the first scheduled send to the last answer
    sent: int
    answered: int
    non_2xx: int
    errors: int  # no answer at all (connection refused or reset, timeout)
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def held(self) -> bool:
        return (
            self.p95_ms <= SWEEP_P95_MS
            and self.achieved >= 0.95 * self.offered
            and self.non_2xx == 0
            and self.errors == 0
        )

    def line(self) -> str:
        return (
            f"offered {self.offered:.0f}/s: achieved {self.achieved:.1f}/s, p50 {self.p50_ms:.1f} ms, "
            f"p95 {self.p95_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, max {self.max_ms:.0f} ms, "
            f"non-2xx {self.non_2xx}, errors {self.errors} ({self.answered}/{self.sent} answered)"
        )


class _Connection:
    """One keep-alive HTTP/1.1 connection, read by hand: the load generator must stay cheap."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used_at = 0.0

    async def open(self) -> None:
        self.close()
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", PORT)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, payload: bytes) -> int:
        if self.writer is None or time.monotonic() - self.used_at > 3.0:  # a server may drop idle ones
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        await self.reader.readexactly(int(length.group(1)) if length else 0)
        if re.search(rb"(?i)\r\nconnection:\s*close", head):
            self.close()
        self.used_at = time.monotonic()
        return status


async def _open_loop(key: str, rate: float, seconds: float, connections: int) -> OpenLoopResult:
    payload = (
        "POST /api/v1/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(JOB_BODY)}\r\n\r\n"
    ).encode() + JOB_BODY
    pool: asyncio.LifoQueue[_Connection] = asyncio.LifoQueue()
    for _ in range(connections):
        pool.put_nowait(_Connection())
    latencies: list[float] = []
    statuses: list[int] = []
    errors = 0
    last_answer = 0.0

    async def send(scheduled: float) -> None:
        nonlocal errors, last_answer
        connection = await pool.get()  # waiting here is queueing: counted, from the scheduled time
        try:
            for attempt in range(2):
                try:
                    status = await asyncio.wait_for(connection.request(payload), timeout=30)
                    break
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    connection.close()  # a keep-alive connection the server had just closed: once more
                    if attempt:
                        raise exc
            done = time.monotonic()
            latencies.append(done - scheduled)
            statuses.append(status)
            last_answer = max(last_answer, done)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            connection.close()
            errors += 1
        finally:
            pool.put_nowait(connection)

    total = int(rate * seconds)
    start = time.monotonic() + 0.05
    tasks = []
    for number in range(total):
        scheduled = start + number / rate  # the timetable: never later because answers are slow
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(scheduled)))
    await asyncio.gather(*tasks)
    ordered = sorted(latencies) or [float("nan")]

    def percentile(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    answered = len(latencies)
    return OpenLoopResult(
        offered=rate,
        achieved=answered / (last_answer - start) if answered else 0.0,
        sent=total,
        answered=answered,
        non_2xx=sum(1 for status in statuses if not 200 <= status < 300),
        errors=errors,
        p50_ms=statistics.median(ordered) * 1000,
        p95_ms=percentile(0.95),
        p99_ms=percentile(0.99),
        max_ms=ordered[-1] * 1000,
    )


def open_loop(key: str, rate: float, seconds: float, connections: int = 256) -> OpenLoopResult:
    return asyncio.run(_open_loop(key, rate, seconds, connections))


CHAINER = """
import os, sys, time, django
django.setup()
from apps.tenants.models import Organization
from cognitionos.redis import redis_client
from apps.audit import services
if not hasattr(services, "audit_chain_run"):  # the audit log chains inside each request: nothing to run
    sys.exit(0)
organization = Organization.objects.get(slug=sys.argv[1])
pending = services.audit_chain_pending_key(organization.pk)
expiry_ms = services.AUDIT_CHAIN_PENDING_SECONDS * 1000
delay_ms = getattr(services, "AUDIT_CHAIN_DELAY_SECONDS", 0) * 1000
linked, runs = 0, 0
while not os.path.exists(sys.argv[2]):
    # A run when a commit asked for one (the flag its task is sent with) and the task's countdown
    # has passed, as a worker takes the task.
    left_ms = redis_client().pttl(pending)
    if left_ms > 0 and expiry_ms - left_ms >= delay_ms:
        linked, runs = linked + services.audit_chain_run(organization=organization), runs + 1
    else:
        time.sleep(0.01)
linked += services.audit_chain_run(organization=organization)
print(linked, runs)
"""


class Chainer:
    """The organization's audit chainer in a process of its own, while submissions run."""

    def __init__(self, organization: Any, fake_url: str) -> None:
        self.stop_file = Path(tempfile.mkdtemp()) / "stop"
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHAINER, organization.slug, str(self.stop_file)],
            cwd=ROOT,
            env={**worker_env(fake_url), "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        self.organization = organization

    def backlog(self) -> tuple[int, float]:
        """Events not chained yet, and the oldest one's age in seconds (0, 0 where chaining is synchronous)."""
        from django.db import connection
        from django_tenants.utils import schema_context

        with schema_context(self.organization.schema_name), connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(occurred_at)), 0) "
                "FROM audit_auditevent WHERE hash IS NULL"
            )
            count, age = cursor.fetchone()
        return int(count), float(age)

    def stop(self) -> str:
        self.stop_file.touch()
        out, _ = self.process.communicate(timeout=120)
        if not out.strip():
            return "none (events are chained in the request)"
        linked, runs = out.split()
        return f"{linked} events linked in {runs} runs"


def jobs_span(organization: Any) -> tuple[float, float]:
    """Seconds from the first job's claim to the last one's, and to the last job's end."""
    from django.db.models import Max, Min
    from django_tenants.utils import schema_context

    from apps.jobs.models import Job

    with schema_context(organization.schema_name):
        span = Job.objects.aggregate(first=Min("started_at"), last=Max("started_at"), ended=Max("finished_at"))
    if span["first"] is None:
        return 0.0, 0.0
    return (span["last"] - span["first"]).total_seconds(), (span["ended"] - span["first"]).total_seconds()


def jobs_clear(organization: Any) -> None:
    """A fresh start for each measurement: submissions admit against the jobs already waiting."""
    from django.db import connection
    from django_tenants.utils import schema_context

    from apps.jobs.models import Job

    with schema_context(organization.schema_name):
        Job.objects.all().delete()
    connection.close()
    jobs_queue_purge()


def verify_chain(organization: Any) -> str:
    from apps.audit.selectors import audit_chain_verify

    report = audit_chain_verify(organization=organization)
    unchained = getattr(report, "unchained", None)
    return f"audit verify: {'OK' if report.ok else 'BROKEN'}, {report.count} chained" + (
        f", {unchained.count} not chained yet" if unchained is not None else ""
    )


def submission_measurements(organization: Any, key: str, args: argparse.Namespace, fake_url: str) -> None:
    server = submission_server(fake_url)
    chainer = Chainer(organization, fake_url)
    try:
        # Each web process loads the API on its first request (seconds on a busy machine): not measured.
        open_loop(key, 10, 3)
        jobs_clear(organization)
        api = submission_latency(key, args.seconds)
        print(f"job submission API, 50 clients (closed loop), {args.seconds} s: {api}")
        jobs_clear(organization)
        open_loop(key, min(args.rate, 100), 2)  # warm-up
        jobs_clear(organization)
        meter = CpuMeter({"web": process_tree(server.pid), "chainer": [chainer.process.pid]})
        result = open_loop(key, args.rate, args.seconds)
        count, age = chainer.backlog()
        print(f"job submission API, open loop at {args.rate:g}/s, {args.seconds} s: {result.line()}")
        print(f"  {meter.line(result.answered, 'submission')}")
        print(f"  audit events not chained at the end: {count} (oldest {age:.2f} s)")
        held = None
        for rate in [float(rate) for rate in args.sweep.split(",") if rate]:
            jobs_clear(organization)
            step = open_loop(key, rate, args.seconds)
            count, age = chainer.backlog()
            print(
                f"  sweep {step.line()}; unchained {count} (oldest {age:.2f} s) {'held' if step.held else 'NOT held'}"
            )
            if step.held:
                held = step
            elif step.p95_ms > 4 * SWEEP_P95_MS:
                break  # far past it: higher rates only take longer to fail
            time.sleep(2)
        print(
            f"highest rate held with p95 <= {SWEEP_P95_MS:.0f} ms: "
            + (f"{held.offered:.0f}/s (p95 {held.p95_ms:.1f} ms)" if held else "none of the rates tried")
        )
    finally:
        web_stop(server)
        print(f"chainer: {chainer.stop()}; {verify_chain(organization)}")


def main() -> None:
    global PORT, DATABASE, QUEUE, SERVER  # noqa: PLW0603 - a script's settings, from its arguments
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--part", choices=["all", "submission"], default="all")
    parser.add_argument("--rate", type=float, default=200.0, help="Open loop: submissions offered per second")
    parser.add_argument("--sweep", default="100,150,200,250,300,350,400,500", help="Open-loop rates to try, ascending")
    parser.add_argument("--port", type=int, default=PORT, help="The web server's port (another bench may hold it)")
    parser.add_argument("--database", default=DATABASE, help="The bench database's name (recreated)")
    parser.add_argument("--server", choices=SERVERS, default=SERVER, help="The web server the submissions go to")
    args = parser.parse_args()
    PORT, DATABASE, SERVER = args.port, args.database, args.server
    if DATABASE != "cognitionos_bench_jobs":  # another bench's workers must not take this one's tasks
        QUEUE = DATABASE.replace("_", "-")
    organization, key = setup()
    from tests.support.fake_provider import FakeProvider

    if args.part == "submission":
        with FakeProvider(latency_s=0.0) as fake:
            submission_measurements(organization, key, args, fake.openai_base_url)
        return
    with FakeProvider(latency_s=1.0) as fake:
        # The jobs wait in the queue first, so the worker's own pace is measured, not the submitters'.
        workers: list[subprocess.Popen[bytes]] = []
        try:
            fake.reset()
            elapsed, done = submit_and_wait(
                organization, 800, before_wait=lambda: workers.extend(start_workers(1, 400, fake.openai_base_url))
            )
            claims_s, run_s = jobs_span(organization)
            print(
                f"1 worker process (threads pool, 400 threads), provider at 1 s, 800 jobs queued: "
                f"{fake.max_in_flight} provider calls in flight at most; {done}/800 jobs in {elapsed:.1f} s "
                f"from the worker's start; claims spread over {claims_s:.1f} s, the last job ended "
                f"{run_s:.1f} s after the first claim"
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
            meter = CpuMeter({"workers": [worker.pid for worker in workers]})
            elapsed, done = submit_and_wait(organization, args.jobs)
            print(
                f"2 worker processes x 150 threads, provider at 0 ms: {done / elapsed:6.1f} jobs/s end to end "
                f"({done}/{args.jobs} succeeded in {elapsed:.1f} s)"
            )
            print(f"  {meter.line(done)}")
        finally:
            stop(workers)
        submission_measurements(organization, key, args, fake.openai_base_url)


if __name__ == "__main__":
    main()
