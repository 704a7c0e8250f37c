"""Content retention: a finished run's input and outputs go after the organization's retention
(at once in no-content mode); counts, costs and timings stay."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from apps.llm.services import llm_settings_set
from apps.tenants.models import Organization
from apps.workflows.models import RunStatus
from apps.workflows.runs import RunNotRerunnable, run_rerun, run_start, runs_content_sweep
from tests.factories import TEST_ACTOR
from tests.workflows.factories import KEY, run_through, steps_of, workflow_make


def test_a_finished_runs_content_is_deleted_after_the_retention_and_its_costs_stay(tenant: Organization) -> None:
    run = run_through(tenant, workflow_make(tenant), {"text": "secret plans"})
    cost = run.cost_usd
    assert runs_content_sweep(organization=tenant) == 0  # 30 days by default
    assert runs_content_sweep(organization=tenant, now=timezone.now() + dt.timedelta(days=31)) == 1
    run.refresh_from_db()
    assert (run.input, run.output, run.content_deleted_at is not None) == ({}, None, True)
    steps = steps_of(run)
    assert {step.output for step in steps.values()} == {None}
    assert run.cost_usd == cost > 0 and steps["summary"].output_tokens > 0
    assert runs_content_sweep(organization=tenant, now=timezone.now() + dt.timedelta(days=32)) == 0


def test_no_content_mode_deletes_finished_runs_content_at_the_next_sweep_and_keeps_running_ones(
    tenant: Organization,
) -> None:
    failed = run_through(tenant, workflow_make(tenant), {"wrong": "x"})
    running = run_start(
        organization=tenant, principal=KEY, workflow=workflow_make(tenant, name="b"), input={"text": "y"}
    )
    llm_settings_set(organization=tenant, actor=TEST_ACTOR, store_content=False)
    assert runs_content_sweep(organization=tenant) == 1
    running.refresh_from_db()
    assert running.status == RunStatus.QUEUED and running.input == {"text": "y"}
    with pytest.raises(RunNotRerunnable):  # its upstream outputs are gone
        run_rerun(organization=tenant, actor=KEY, run=failed)
