"""Jobs' move onto the durable-work runtime keeps every row: 0004 renames `runs` to `attempts` and
turns `content_removed` into `content_deleted_at`, on a schema that holds jobs in every state."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from django.utils import timezone

from apps.jobs.models import Job, JobStatus
from apps.tenants.models import Organization
from tests.support.schema_migrations import constraints_check_now, migrate, models_at

BEFORE = [("jobs", "0003_partial_index_ors")]
AFTER = [("jobs", "0004_job_work_vocabulary")]


def test_0004_keeps_every_job_and_carries_runs_and_content_removal_over(tenant: Organization) -> None:
    executor = migrate(BEFORE)
    OldJob = models_at(executor, BEFORE).get_model("jobs", "Job")
    now = timezone.now()
    finished = now - dt.timedelta(days=3)
    common = {"principal_kind": "api_key", "principal_id": "7", "principal_label": "k"}
    rows = {
        "queued": OldJob.objects.create(id=uuid.uuid4(), request={"messages": [{"role": "user"}]}, **common),
        "running": OldJob.objects.create(
            id=uuid.uuid4(),
            status="running",
            request={"messages": []},
            runs=2,
            admitted_at=now,
            started_at=now,
            heartbeat_at=now,
            **common,
        ),
        "kept": OldJob.objects.create(
            id=uuid.uuid4(),
            status="succeeded",
            request={"messages": [{"role": "user", "content": "hi"}]},
            result={"text": "hello"},
            runs=1,
            cost_usd=Decimal("0.25"),
            finished_at=finished,
            **common,
        ),
        "removed": OldJob.objects.create(
            id=uuid.uuid4(),
            status="failed",
            request={"messages": None},
            runs=3,
            error_class="WorkerLost",
            finished_at=finished,
            content_removed=True,
            **common,
        ),
    }
    constraints_check_now()  # the inserts' deferred checks, before the tables change

    migrate(AFTER)

    jobs = {job.pk: job for job in Job.objects.all()}
    assert set(jobs) == {row.pk for row in rows.values()}
    queued, running = jobs[rows["queued"].pk], jobs[rows["running"].pk]
    kept, removed = jobs[rows["kept"].pk], jobs[rows["removed"].pk]
    assert (queued.status, queued.attempts, queued.content_deleted_at) == (JobStatus.QUEUED, 0, None)
    assert (running.status, running.attempts, running.heartbeat_at) == (JobStatus.RUNNING, 2, now)
    assert (kept.attempts, kept.cost_usd, kept.result, kept.content_deleted_at) == (
        1,
        Decimal("0.25"),
        {"text": "hello"},
        None,
    )
    assert (removed.attempts, removed.error_class, removed.content_deleted_at) == (3, "WorkerLost", finished)
    assert removed.content_removed and not kept.content_removed
    assert all(job.next_attempt_at is None for job in jobs.values())
