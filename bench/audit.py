"""Audit log figures: what recording an event costs, how fast the chainer links, export and verify speed.

    .venv/bin/python bench/audit.py [--samples 2000] [--events 100000]

Prints:
- the cost of one audit event in its own transaction, median, chained synchronously (the previous
  design: chain lock, head read, SHA-256 and INSERT in the writer's transaction, the lock held to
  its commit) and asynchronously (audit_record now: one INSERT, and after the commit the chainer's
  pending flag in Redis, plus a task sent for the first event of a burst), interleaved in one run;
- events/s with 8 processes writing one organization at once, both ways (the synchronous chain
  serializes them on its lock from the insert to the commit); with the chainer running in a process
  of its own meanwhile (as a worker runs its task), and how far behind it was at the end;
- the chainer alone: events linked per second, from a backlog of unchained events;
- GET /api/v1/audit-events/export over `--events` events (CSV and JSON lines): events/s and the
  Python memory the export peaked at (it streams in batches);
- `audit verify` over the same events: events/s and peak memory.

Runs on its own database in the bench servers (.data/bench). Not a test: compare within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._setup import django_on_fresh_database  # noqa: E402 - after the path is set

WRITERS = 8
METADATA = {"model": "simulated-mini", "n": 1}

# The previous design's append, kept here to compare against: lock, then the head, in one round trip.
_LOCK_THEN_HEAD_SQL = """
    SELECT pg_advisory_xact_lock(%s, 'audit_auditevent'::regclass::oid::int);
    SELECT clock_timestamp(), head.sequence, head.hash
    FROM (SELECT 1) AS one
    LEFT JOIN LATERAL (
        SELECT sequence, hash FROM audit_auditevent WHERE sequence IS NOT NULL ORDER BY sequence DESC LIMIT 1
    ) AS head ON true
"""


def _synchronous(organization: Any) -> Callable[[], None]:
    """What audit_record did before: the chain lock, the head, the hash and the INSERT, in the
    writer's transaction (the lock held until it commits)."""
    from django.db import connection, transaction
    from django_tenants.utils import schema_context

    from apps.audit.chain import GENESIS_HASH, ChainFields, event_hash
    from apps.audit.models import AuditEvent
    from apps.audit.services import AUDIT_CHAIN_LOCK_CLASS

    def record() -> None:
        with transaction.atomic(), schema_context(organization.schema_name):
            with connection.cursor() as cursor:
                cursor.execute(_LOCK_THEN_HEAD_SQL, [AUDIT_CHAIN_LOCK_CLASS])
                cursor.nextset()
                occurred_at, last_sequence, last_hash = cursor.fetchone()
            fields = ChainFields(
                sequence=(last_sequence or 0) + 1,
                occurred_at=occurred_at,
                actor_kind="user",
                actor_id="42",
                actor_label="alice@example.com",
                action="job.submitted",
                target_type="",
                target_id="",
                target_label="",
                metadata=METADATA,
                previous_hash=last_hash or GENESIS_HASH,
            )
            AuditEvent(**fields.__dict__, hash=event_hash(fields)).save(force_insert=True)

    return record


def _asynchronous(organization: Any) -> Callable[[], None]:
    from django.db import transaction

    from apps.accounts.principals import Principal
    from apps.audit.services import audit_record

    actor = Principal(kind="user", id="42", label="alice@example.com")

    def record() -> None:
        with transaction.atomic():
            audit_record(organization=organization, actor=actor, action="job.submitted", metadata=METADATA)

    return record


def _timed(record: Callable[[], None]) -> float:
    started = time.perf_counter()
    record()
    return time.perf_counter() - started


CHAINER = """
import os, sys, time, django
django.setup()
from apps.audit import services
from apps.tenants.models import Organization
from cognitionos.redis import redis_client
organization = Organization.objects.get(slug=sys.argv[1])
pending = services.audit_chain_pending_key(organization.pk)
expiry_ms, delay_ms = services.AUDIT_CHAIN_PENDING_SECONDS * 1000, services.AUDIT_CHAIN_DELAY_SECONDS * 1000
while not os.path.exists(sys.argv[2]):
    # A run when a commit asked for one (the flag its task is sent with) and the task's countdown
    # has passed, as a worker takes the task.
    left_ms = redis_client().pttl(pending)
    if left_ms > 0 and expiry_ms - left_ms >= delay_ms:
        services.audit_chain_run(organization=organization)
    else:
        time.sleep(0.01)
"""


def _unchained_backlog(organization: Any) -> tuple[int, float]:
    from django.db import connection
    from django_tenants.utils import schema_context

    with schema_context(organization.schema_name), connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(occurred_at)), 0) "
            "FROM audit_auditevent WHERE sequence IS NULL"
        )
        count, age = cursor.fetchone()
    return int(count), float(age)


def bench_record(samples: int) -> None:
    from apps.accounts.principals import Principal
    from apps.audit.selectors import audit_chain_verify
    from apps.audit.services import audit_chain_link
    from apps.tenants.services import organization_create

    actor = Principal.system("bench")
    sync_org = organization_create(slug="synchronous", name="Synchronous", owner_email="s@example.com", actor=actor)
    async_org = organization_create(slug="asynchronous", name="Asynchronous", owner_email="a@example.com", actor=actor)
    for organization in (sync_org, async_org):
        audit_chain_link(organization=organization)  # provisioning's events
    synchronous, asynchronous = _synchronous(sync_org), _asynchronous(async_org)
    for _ in range(200):  # warm both paths
        synchronous()
        asynchronous()
    sync_times, async_times = [], []
    for _ in range(samples):  # interleaved, so drift on a shared machine hits both alike
        sync_times.append(_timed(synchronous))
        async_times.append(_timed(asynchronous))
    s, a = statistics.median(sync_times), statistics.median(async_times)
    print(
        f"audit event in its own transaction, median of {samples}: chained synchronously {s * 1e3:.3f} ms, "
        f"asynchronously (audit_record) {a * 1e3:.3f} ms ({(a - s) * 1e3:+.3f} ms)"
    )

    per_writer, rounds = max(50, samples // 20), 3
    rates: dict[bool, list[float]] = {False: [], True: []}
    stop_file = Path(tempfile.mkdtemp()) / "stop"
    chainer = subprocess.Popen([sys.executable, "-c", CHAINER, async_org.slug, str(stop_file)], cwd=ROOT)
    lags = []
    try:
        for _ in range(rounds):  # alternated, as above
            for is_async in (False, True):
                slug = async_org.slug if is_async else sync_org.slug
                rates[is_async].append(_processes_throughput(slug, is_async, per_writer))
                if is_async:
                    lags.append(_unchained_backlog(async_org))
    finally:
        stop_file.touch()
        chainer.wait(timeout=60)
    started = time.perf_counter()
    audit_chain_link(organization=async_org)
    drained = time.perf_counter() - started
    report = audit_chain_verify(organization=async_org)
    print(
        f"{WRITERS} processes writing one organization, median of {rounds} rounds of {WRITERS}x{per_writer}: "
        f"chained synchronously {statistics.median(rates[False]):,.0f} events/s, "
        f"asynchronously {statistics.median(rates[True]):,.0f} events/s; unchained when the writers ended: "
        + ", ".join(f"{count} (oldest {age:.2f} s)" for count, age in lags)
        + f"; the rest linked in {drained * 1e3:.0f} ms; "
        f"verify {'OK' if report.ok else 'BROKEN'}, {report.count} events"
    )


def bench_chainer(events: int) -> None:
    """The chainer alone: a backlog of `events` unchained events, linked in its batches."""
    from django.db import transaction
    from django.utils import timezone
    from django_tenants.utils import schema_context

    from apps.accounts.principals import Principal
    from apps.audit.models import AuditEvent
    from apps.audit.services import AUDIT_CHAIN_BATCH, audit_chain_link
    from apps.tenants.services import organization_create

    organization = organization_create(
        slug="backlog", name="Backlog", owner_email="c@example.com", actor=Principal.system("bench")
    )
    with schema_context(organization.schema_name), transaction.atomic():
        AuditEvent.objects.bulk_create(
            AuditEvent(
                occurred_at=timezone.now(),
                actor_kind="api_key",
                actor_id="7",
                actor_label="key 7",
                action="job.submitted",
                target_type="jobs.Job",
                target_id=f"{number:08d}-4d3a-9c55-5a1e0f3d2b11",
                target_label=f"job {number}",
                metadata={"model": "simulated-mini", "tokens": number % 997},
            )
            for number in range(events)
        )
    started = time.perf_counter()
    linked = audit_chain_link(organization=organization)
    elapsed = time.perf_counter() - started
    print(
        f"chainer: {linked:,} unchained events linked in {elapsed:.2f} s, {linked / elapsed:,.0f} events/s "
        f"(batches of {AUDIT_CHAIN_BATCH}, each its own transaction under the lock)"
    )


def _writer(slug: str, is_async: bool, per_writer: int, start_at: float) -> tuple[float, float]:
    """One writer process: `per_writer` events, each in its own transaction, from `start_at` on."""
    import django

    django.setup()

    from apps.tenants.models import Organization

    organization = Organization.objects.get(slug=slug)
    record = _asynchronous(organization) if is_async else _synchronous(organization)
    record()  # connect before the start
    time.sleep(max(0.0, start_at - time.time()))
    started = time.time()
    for _ in range(per_writer):
        record()
    return started, time.time()


def _processes_throughput(slug: str, is_async: bool, per_writer: int) -> float:
    """Writers in separate processes, as web workers are (threads of one process would also queue on
    the GIL while one of them holds the chain lock)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    start_at = time.time() + 5  # after every process has started Django
    with ProcessPoolExecutor(max_workers=WRITERS, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_writer, slug, is_async, per_writer, start_at) for _ in range(WRITERS)]
        spans = [future.result() for future in futures]
    return WRITERS * per_writer / (max(end for _, end in spans) - min(start for start, _ in spans))


def _seed(organization: Any, events: int) -> None:
    """Chained events written in bulk (audit_record one by one would take minutes)."""
    from django.db import transaction
    from django.utils import timezone
    from django_tenants.utils import schema_context

    from apps.audit.chain import GENESIS_HASH, ChainFields, event_hash
    from apps.audit.models import AuditEvent
    from apps.audit.services import audit_chain_link

    previous, batch_size = GENESIS_HASH, 5000
    audit_chain_link(organization=organization)  # provisioning's events first
    with schema_context(organization.schema_name):
        sequence = AuditEvent.objects.count()
        if sequence:
            previous = (
                (
                    AuditEvent.objects.filter(sequence__isnull=False)
                    .order_by("-sequence")
                    .values_list("hash", flat=True)[0]
                )
                or GENESIS_HASH
            )
        while sequence < events:
            rows = []
            for _ in range(min(batch_size, events - sequence)):
                sequence += 1
                fields = ChainFields(
                    sequence=sequence,
                    occurred_at=timezone.now(),
                    actor_kind="api_key",
                    actor_id=str(sequence % 50),
                    actor_label=f"key {sequence % 50}",
                    action=("job.submitted", "job.cancelled", "budget.set", "apikey.created")[sequence % 4],
                    target_type="jobs.Job",
                    target_id=f"{sequence:08d}-4d3a-9c55-5a1e0f3d2b11",
                    target_label=f"job {sequence}",
                    metadata={"model": "simulated-mini", "tokens": sequence % 997, "tags": ["bench", "audit"]},
                    previous_hash=previous,
                )
                previous = event_hash(fields)
                rows.append(AuditEvent(**fields.__dict__, hash=previous))
            with transaction.atomic():
                AuditEvent.objects.bulk_create(rows)


def _measure(run: Callable[[], int]) -> tuple[int, float, float]:
    """Items done, seconds (timed without tracing: tracemalloc slows Python down several times), and
    the Python memory peak in MB (a second run, traced)."""
    started = time.perf_counter()
    done = run()
    elapsed = time.perf_counter() - started
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return done, elapsed, peak / 2**20


def bench_export_and_verify(events: int) -> None:
    from django.test import Client

    from apps.accounts.principals import Principal
    from apps.apikeys.services import apikey_create
    from apps.audit.selectors import audit_chain_verify
    from apps.tenants.connection import tenant_connection
    from apps.tenants.services import organization_create

    actor = Principal.system("bench")
    organization = organization_create(slug="exported", name="Exported", owner_email="e@example.com", actor=actor)
    started = time.perf_counter()
    _seed(organization, events)
    print(f"seeded {events:,} chained events in {time.perf_counter() - started:.1f} s (bulk, not audit_record)")
    tenant_connection().set_schema_to_public()
    key = apikey_create(organization=organization, name="bench", actor=actor).key
    client = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {key}")

    warm = client.get("/api/v1/audit-events/export?format=csv&action=none")  # imports, caches, pool
    b"".join(warm.streaming_content)  # type: ignore[attr-defined]
    for export_format in ("csv", "jsonl"):

        def export(export_format: str = export_format) -> int:
            response = client.get(f"/api/v1/audit-events/export?format={export_format}")
            assert response.status_code == 200, response.content
            lines = 0
            for chunk in response.streaming_content:  # type: ignore[attr-defined]
                lines += chunk.count(b"\n")
            return lines - (1 if export_format == "csv" else 0)

        exported, elapsed, peak = _measure(export)
        print(
            f"export {export_format:5} of {exported:,} events: {exported / elapsed:,.0f} events/s "
            f"({elapsed:.2f} s), Python memory peak {peak:.1f} MB"
        )

    report = None

    def verify() -> int:
        nonlocal report
        report = audit_chain_verify(organization=organization)
        return report.count

    verified, elapsed, peak = _measure(verify)
    assert report is not None and report.ok
    print(f"audit verify of {verified:,} events: {verified / elapsed:,.0f} events/s, Python memory peak {peak:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    os.environ["CELERY_TASK_DEFAULT_QUEUE"] = "cognitionos-bench-audit"  # the chainer's tasks: no worker takes them
    django_on_fresh_database("cognitionos_bench_audit")
    bench_record(args.samples)
    bench_chainer(args.events)
    bench_export_and_verify(args.events)


if __name__ == "__main__":
    main()
