"""Workflow steps as a kind of the durable-work runtime: the runtime's constraints with steps' own
final status, what the runtime treats as finished, and a reaper that keeps to its organization."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.jobs.models import Job
from apps.jobs.services import job_submit
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from apps.work.models import WorkStatus
from apps.work.services import work_claim, work_finish, work_reap
from apps.workflows.executor import STEP
from apps.workflows.models import StepRun, StepStatus
from apps.workflows.runs import run_start
from cognitionos.celery import app as celery_app
from tests.workflows.factories import KEY, steps_of, workflow_make


def test_skipped_is_a_final_status_of_steps_only_and_the_runtime_constraints_hold_for_steps(
    tenant: Organization,
) -> None:
    run = run_start(organization=tenant, principal=KEY, workflow=workflow_make(tenant), input={"text": "x"})
    step = StepRun.objects.filter(run=run, name="french")
    with pytest.raises(IntegrityError), transaction.atomic():  # final: it has ended at a time
        step.update(status=StepStatus.SKIPPED)
    with pytest.raises(IntegrityError), transaction.atomic():  # running: held by a worker
        step.update(status=StepStatus.RUNNING)
    job = job_submit(organization=tenant, principal=KEY, request={"prompt": "hi", "model": "simulated-mini"})
    with pytest.raises(IntegrityError), transaction.atomic():  # a job has no such status
        Job.objects.filter(pk=job.pk).update(status="skipped", finished_at=timezone.now())
    step.update(status=StepStatus.SKIPPED, finished_at=timezone.now())
    skipped = step.get()
    assert skipped.is_finished
    # The runtime neither claims nor ends a row in a status of the kind's own.
    assert work_claim(organization=tenant, kind=STEP, item_id=skipped.pk) is None
    assert not work_finish(organization=tenant, kind=STEP, item=skipped, status=WorkStatus.FAILED)
    assert step.get().status == StepStatus.SKIPPED


def test_the_step_reaper_of_one_organization_leaves_anothers_dead_steps_alone(
    two_tenants: tuple[Organization, Organization], monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, kwargs, countdown=None: sent.append(kwargs))
    long_ago = timezone.now() - dt.timedelta(minutes=10)
    runs = {}
    for organization in two_tenants:
        with organization_schema(organization):
            run = run_start(
                organization=organization, principal=KEY, workflow=workflow_make(organization), input={"text": "x"}
            )
            StepRun.objects.filter(run=run, name="summary").update(
                status=StepStatus.RUNNING, attempts=1, started_at=long_ago, heartbeat_at=long_ago
            )
            runs[organization.pk] = run
    a, b = two_tenants
    with organization_schema(a):
        assert work_reap(organization=a, kind=STEP) == {"requeued": 1, "failed": 0, "resent": 0}
        assert steps_of(runs[a.pk])["summary"].status == StepStatus.QUEUED
    with organization_schema(b):
        assert steps_of(runs[b.pk])["summary"].status == StepStatus.RUNNING
