"""Audit log figures: what the hash chain adds to each audit_record, and export and verify speed.

    .venv/bin/python bench/audit.py [--samples 2000] [--events 100000]

Prints:
- the cost of one audit event in its own transaction, median, before the chain (one INSERT, as
  audit_record did) and with it (chain lock, head read, SHA-256, INSERT), interleaved in one run;
- events/s with 8 processes writing one organization at once (the chain lock serializes them);
- GET /api/v1/audit-events/export over `--events` events (CSV and JSON lines): events/s and the
  Python memory the export peaked at (it streams in batches);
- `audit verify` over the same events: events/s and peak memory.

Runs on its own database in the bench servers (.data/bench). Not a test: compare within one run.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._setup import django_on_fresh_database  # noqa: E402 - after the path is set

WRITERS = 8
_SEQUENCES = itertools.count(10**9, 10**8)  # the unchained writers' sequence ranges, apart


def _unchained_insert(organization: Any, counter: Any) -> Callable[[], None]:
    """What audit_record did before the chain: one INSERT of the event, no lock, no head read."""
    from django.db import transaction
    from django_tenants.utils import schema_context

    from apps.audit.models import AuditEvent

    def record() -> None:
        with transaction.atomic(), schema_context(organization.schema_name):
            AuditEvent(
                sequence=next(counter),
                actor_kind="user",
                actor_id="42",
                actor_label="alice@example.com",
                action="job.submitted",
                target_type="jobs.Job",
                target_id="0b7a4c2e-1f8e-4d3a-9c55-5a1e0f3d2b11",
                target_label="job",
                metadata={"model": "simulated-mini", "n": 1},
                previous_hash="0" * 64,
                hash="0" * 64,
            ).save(force_insert=True)

    return record


def _chained(organization: Any) -> Callable[[], None]:
    from django.db import transaction

    from apps.accounts.principals import Principal
    from apps.audit.services import audit_record

    actor = Principal(kind="user", id="42", label="alice@example.com")

    def record() -> None:
        with transaction.atomic():
            audit_record(
                organization=organization,
                actor=actor,
                action="job.submitted",
                metadata={"model": "simulated-mini", "n": 1},
            )

    return record


def _timed(record: Callable[[], None]) -> float:
    started = time.perf_counter()
    record()
    return time.perf_counter() - started


def bench_record(samples: int) -> None:
    from itertools import count

    from apps.accounts.principals import Principal
    from apps.tenants.services import organization_create

    actor = Principal.system("bench")
    before_org = organization_create(slug="unchained", name="Unchained", owner_email="b@example.com", actor=actor)
    after_org = organization_create(slug="chained", name="Chained", owner_email="a@example.com", actor=actor)
    before, after = _unchained_insert(before_org, count(1000)), _chained(after_org)
    for _ in range(200):  # warm both paths
        before()
        after()
    before_times, after_times = [], []
    for _ in range(samples):  # interleaved, so drift on a shared machine hits both alike
        before_times.append(_timed(before))
        after_times.append(_timed(after))
    b, a = statistics.median(before_times), statistics.median(after_times)
    print(
        f"audit event in its own transaction, median of {samples}: before the chain {b * 1e3:.3f} ms, "
        f"with the chain {a * 1e3:.3f} ms, added {(a - b) * 1e3:.3f} ms per audit_record"
    )

    per_writer, rounds = max(50, samples // 20), 3
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):  # alternated, as above
        for chained in (False, True):
            slug = after_org.slug if chained else before_org.slug
            rates[chained].append(_processes_throughput(slug, chained, per_writer))
    print(
        f"{WRITERS} processes writing one organization, median of {rounds} rounds of {WRITERS}x{per_writer}: "
        f"before the chain {statistics.median(rates[False]):,.0f} events/s, "
        f"with the chain {statistics.median(rates[True]):,.0f} events/s"
    )


def _writer(slug: str, chained: bool, per_writer: int, start_at: float, first_sequence: int) -> tuple[float, float]:
    """One writer process: `per_writer` events, each in its own transaction, from `start_at` on."""
    import django

    django.setup()
    from itertools import count

    from apps.tenants.models import Organization

    organization = Organization.objects.get(slug=slug)
    record = _chained(organization) if chained else _unchained_insert(organization, count(first_sequence))
    record()  # connect before the start
    time.sleep(max(0.0, start_at - time.time()))
    started = time.time()
    for _ in range(per_writer):
        record()
    return started, time.time()


def _processes_throughput(slug: str, chained: bool, per_writer: int) -> float:
    """Writers in separate processes, as web workers are (threads of one process would also queue on
    the GIL while one of them holds the chain lock)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    start_at = time.time() + 5  # after every process has started Django
    with ProcessPoolExecutor(max_workers=WRITERS, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            pool.submit(_writer, slug, chained, per_writer, start_at, next(_SEQUENCES) + number * 10**6)
            for number in range(WRITERS)
        ]
        spans = [future.result() for future in futures]
    return WRITERS * per_writer / (max(end for _, end in spans) - min(start for start, _ in spans))


def _seed(organization: Any, events: int) -> None:
    """Chained events written in bulk (audit_record one by one would take minutes)."""
    from django.db import transaction
    from django.utils import timezone
    from django_tenants.utils import schema_context

    from apps.audit.chain import GENESIS_HASH, ChainFields, event_hash
    from apps.audit.models import AuditEvent

    previous, batch_size = GENESIS_HASH, 5000
    with schema_context(organization.schema_name):
        sequence = AuditEvent.objects.count()
        if sequence:
            previous = AuditEvent.objects.order_by("-sequence").values_list("hash", flat=True)[0]
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
    django_on_fresh_database("cognitionos_bench_audit")
    bench_record(args.samples)
    bench_export_and_verify(args.events)


if __name__ == "__main__":
    main()
