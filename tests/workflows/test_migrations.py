"""Steps' move onto the durable-work runtime keeps every row: 0004 turns `pending` into `queued`,
renames `dispatched_at` to `admitted_at` and gives each step its run's creation time, principal and
content deletion, on a schema that holds steps in every state."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from django.utils import timezone

from apps.tenants.models import Organization
from apps.workflows.models import StepRun, StepStatus, WorkflowRun
from tests.support.schema_migrations import constraints_check_now, migrate, models_at

BEFORE = [("workflows", "0003_run_admission")]


def test_0004_keeps_every_step_in_every_state_and_carries_the_runs_fields_over(tenant: Organization) -> None:
    executor = migrate(BEFORE)
    old = models_at(executor, BEFORE)
    Workflow, Version = old.get_model("workflows", "Workflow"), old.get_model("workflows", "WorkflowVersion")
    Run, Step = old.get_model("workflows", "WorkflowRun"), old.get_model("workflows", "StepRun")
    now = timezone.now()
    created, finished = now - dt.timedelta(hours=2), now - dt.timedelta(hours=1)
    workflow = Workflow.objects.create(id=uuid.uuid4(), name="w")
    version = Version.objects.create(workflow=workflow, number=1, definition={"steps": []})
    who = {"principal_kind": "api_key", "principal_id": "7", "principal_label": "k"}
    running_run = Run.objects.create(
        id=uuid.uuid4(), workflow=workflow, version=version, status="running", input={"x": 1}, **who
    )
    Run.objects.filter(pk=running_run.pk).update(created_at=created, started_at=created, heartbeat_at=now)
    swept_run = Run.objects.create(
        id=uuid.uuid4(),
        workflow=workflow,
        version=version,
        status="failed",
        finished_at=finished,
        content_deleted_at=finished,
        principal_kind="user",
        principal_id="3",
        principal_label="ada@example.com",
    )
    steps: dict[str, Any] = {}

    def step(name: str, run: Any = running_run, **fields: Any) -> None:
        steps[name] = Step.objects.create(run=run, name=name, position=len(steps), **fields)

    step("waiting")  # its run's admission or its dependencies hold it
    step("sent", dispatched_at=now)
    step("retrying", dispatched_at=now, attempts=1, error_class="provider_unavailable")
    step("running", status="running", attempts=2, dispatched_at=now, started_at=now, heartbeat_at=now)
    step(
        "succeeded",
        status="succeeded",
        attempts=1,
        output={"text": "hi"},
        items={"0": {"output": "a"}},
        cost_usd=Decimal("0.25"),
        input_tokens=3,
        output_tokens=4,
        model="simulated-mini",
        started_at=created,
        finished_at=finished,
    )
    step("skipped", status="skipped", finished_at=finished)
    step("failed", run=swept_run, status="failed", attempts=3, error_class="WorkerLost", finished_at=finished)
    step("cancelled", run=swept_run, status="cancelled", error_class="run_failed", finished_at=finished)
    constraints_check_now()  # the inserts' deferred checks, before the tables change

    migrate([max(executor.loader.graph.leaf_nodes("workflows"))])

    after = {row.name: row for row in StepRun.objects.all()}
    assert set(after) == set(steps)
    assert {name: row.pk for name, row in after.items()} == {name: row.pk for name, row in steps.items()}
    assert {name: (row.status, row.attempts) for name, row in after.items()} == {
        "waiting": (StepStatus.QUEUED, 0),
        "sent": (StepStatus.QUEUED, 0),
        "retrying": (StepStatus.QUEUED, 1),
        "running": (StepStatus.RUNNING, 2),
        "succeeded": (StepStatus.SUCCEEDED, 1),
        "skipped": (StepStatus.SKIPPED, 0),
        "failed": (StepStatus.FAILED, 3),
        "cancelled": (StepStatus.CANCELLED, 0),
    }
    assert after["waiting"].admitted_at is None
    assert after["sent"].admitted_at == after["retrying"].admitted_at == after["running"].heartbeat_at == now
    assert after["retrying"].error_class == "provider_unavailable"
    succeeded = after["succeeded"]
    assert (succeeded.output, succeeded.items, succeeded.cost_usd) == (
        {"text": "hi"},
        {"0": {"output": "a"}},
        Decimal("0.25"),
    )
    assert (succeeded.input_tokens, succeeded.output_tokens, succeeded.model) == (3, 4, "simulated-mini")
    assert (succeeded.started_at, succeeded.finished_at) == (created, finished)
    # Who asked, when, and whether the content is gone: the run's.
    assert {(row.principal_kind, row.principal_id, row.principal_label) for name, row in after.items()} == {
        ("api_key", "7", "k"),
        ("user", "3", "ada@example.com"),
    }
    assert (after["failed"].principal_label, after["failed"].content_deleted_at) == ("ada@example.com", finished)
    assert after["running"].created_at == created and after["running"].content_deleted_at is None
    assert all(row.next_attempt_at is None for row in after.values())
    assert WorkflowRun.objects.get(pk=running_run.pk).status == "running"
