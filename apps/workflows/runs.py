"""Workflow runs: start, cancel, re-run, admit, advance and end them, and their content retention.

A run's steps are durable work of the runtime (apps.work, kind `workflow_step`, run by
apps.workflows.executor): a step is sent to the queue once every step it depends on has finished,
so independent steps run in parallel. Every change of a run's state happens with the run's row
locked, and a step's row only after its run's (the one lock order, also the runtime's through the
kind's `lock_first`): two steps finishing at once see each other, and the next steps are sent
exactly once, after the commit that made them ready.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.accounts.principals import Principal
from apps.audit.services import audit_record
from apps.billing.selectors import plan_limit
from apps.llm.calls import llm_content_policy
from apps.tenants.models import Organization
from apps.webhooks.services import WebhookInvalid, webhook_event_emit
from apps.work.admission import waiting_admit
from apps.work.metrics import workflow_run_finished_record
from apps.work.principals import principal_fields
from apps.work.progress import progress_publish
from apps.work.services import work_send
from apps.workflows.definition import Definition, StepSpec
from apps.workflows.models import RunStatus, StepRun, StepStatus, Workflow, WorkflowRun, WorkflowVersion
from apps.workflows.selectors import definition_of, run_steps, workflow_latest_version
from cognitionos.refusals import Refusal

MAX_INPUT_BYTES = 1024 * 1024
# The runtime's name for a workflow step (apps.workflows.executor.STEP); it travels in task messages.
STEP_KIND = "workflow_step"
# A run's changes wake the streams following it (apps.work.progress).
PROGRESS_TOPIC = "workflow_run"


class RunInputInvalid(Refusal):
    """A run's input is refused; `param` names the field at fault (and starts the message)."""

    code = "invalid_input"

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


class RunFinished(Refusal):
    """The run already ended; it can't be cancelled."""

    http_status = 409
    code = "run_finished"

    def __init__(self, status: str) -> None:
        super().__init__(f"the run already ended ({status}); nothing to cancel")
        self.status = status


class RunNotRerunnable(Refusal):
    """Only a failed run can be re-run from its failed step."""

    http_status = 409
    code = "run_not_failed"

    def __init__(self, state: str) -> None:
        super().__init__(f"only a failed run can be re-run from its failed step (this one is {state})")
        self.state = state


# -- starting, cancelling, re-running -----------------------------------------------------------------


def _input_check(definition: Definition, data: object) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RunInputInvalid("input", "`input` must be an object")
    if len(json.dumps(data, default=str)) > MAX_INPUT_BYTES:
        raise RunInputInvalid("input", f"`input` is limited to {MAX_INPUT_BYTES} bytes")
    if definition.inputs is not None:
        for name in definition.inputs:
            if name not in data:
                raise RunInputInvalid(f"input.{name}", f"missing input {name!r}")
        for name in data:
            if name not in definition.inputs:
                declared = ", ".join(definition.inputs) or "none"
                raise RunInputInvalid(f"input.{name}", f"unknown input {name!r} (declared inputs: {declared})")
    return data


@transaction.atomic
def run_start(
    *,
    organization: Organization,
    principal: Principal,
    workflow: Workflow,
    input: object,
    version: WorkflowVersion | None = None,
) -> WorkflowRun:
    """Start a run of the workflow's latest version (or `version`); its first steps go to the
    queue once this commits."""
    version = version or workflow_latest_version(workflow=workflow)
    definition = definition_of(version=version)
    data = _input_check(definition, input)
    who = principal_fields(principal)
    run = WorkflowRun.objects.create(workflow=workflow, version=version, input=data, **who)
    StepRun.objects.bulk_create(
        [StepRun(run=run, name=step.name, position=step.index, **who) for step in definition.steps]
    )
    audit_record(
        organization=organization,
        actor=principal,
        action="workflow.run_started",
        target=run,
        metadata={"workflow": str(workflow.pk), "version": version.number},
    )
    runs_admit(organization=organization, waiting=True)
    return run


def run_lock(run_id: UUID) -> WorkflowRun:
    """The run, locked in the caller's transaction: what every writer locks before its steps."""
    return WorkflowRun.objects.select_for_update(of=("self",)).select_related("version", "workflow").get(pk=run_id)


@transaction.atomic
def run_cancel(*, organization: Organization, actor: Principal, run: WorkflowRun) -> WorkflowRun:
    """Cancel a run: its waiting steps never start; a call already in flight finishes (and is
    billed, its output kept on its step) but no further step runs."""
    run = run_lock(run.pk)
    if run.is_finished:
        raise RunFinished(run.status)
    run_end(organization, run, RunStatus.CANCELLED, error=("cancelled", f"cancelled by {actor.label}"))
    audit_record(organization=organization, actor=actor, action="workflow.run_cancelled", target=run)
    return run


@transaction.atomic
def run_rerun(*, organization: Organization, actor: Principal, run: WorkflowRun) -> WorkflowRun:
    """A new run of the same version and input that keeps the outputs of the steps that succeeded
    (or were skipped) upstream of the failed steps and runs the failed steps and everything after
    them again."""
    source = run_lock(run.pk)
    steps = {step.name: step for step in run_steps(run=source)}
    failed = [name for name, step in steps.items() if step.status == StepStatus.FAILED]
    if source.status != RunStatus.FAILED or not failed:
        raise RunNotRerunnable(source.status)
    if source.content_deleted_at is not None:
        raise RunNotRerunnable("failed, but its outputs were deleted (content retention)")
    definition = definition_of(version=source.version)
    done = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)
    reset = definition.downstream(failed) | {name for name, step in steps.items() if step.status not in done}
    who = principal_fields(actor)
    rerun = WorkflowRun.objects.create(
        workflow_id=source.workflow_id, version=source.version, input=source.input, rerun_of=source, **who
    )
    rows = []
    for spec in definition.steps:
        old = steps[spec.name]
        if spec.name in reset:
            rows.append(StepRun(run=rerun, name=spec.name, position=spec.index, **who))
        else:
            rows.append(
                StepRun(
                    run=rerun,
                    name=spec.name,
                    position=spec.index,
                    status=old.status,
                    output=old.output,
                    items=old.items,
                    input_tokens=old.input_tokens,
                    output_tokens=old.output_tokens,
                    model=old.model,
                    cache_layer=old.cache_layer,
                    reused=True,
                    started_at=old.started_at,
                    finished_at=old.finished_at,
                    **who,
                )
            )
    StepRun.objects.bulk_create(rows)
    audit_record(
        organization=organization,
        actor=actor,
        action="workflow.run_rerun",
        target=rerun,
        metadata={"rerun_of": str(source.pk), "steps": sorted(reset)},
    )
    runs_admit(organization=organization, waiting=True)
    return rerun


def runs_admit(*, organization: Organization, waiting: bool = False) -> list[UUID]:
    """Let the oldest waiting runs start while fewer than the plan's `max_concurrent_jobs` runs of
    the organization are admitted and unfinished, so one organization's flood of runs can't fill
    the queue for everyone (the runtime's admission, per run rather than per step). `waiting`: the
    caller just created a waiting run (skip the cheap check)."""
    if not waiting and not WorkflowRun.objects.filter(status=RunStatus.QUEUED, admitted_at__isnull=True).exists():
        return []
    with transaction.atomic(savepoint=False):
        ids = waiting_admit(table=WorkflowRun._meta.db_table, cap=plan_limit(organization, "concurrent_runs"))
        for run in WorkflowRun.objects.filter(pk__in=ids).select_related("version"):
            run_advance(organization, run)
    return ids


# -- advancing and ending a run -----------------------------------------------------------------------


def _skips(spec: StepSpec, steps: dict[str, StepRun]) -> bool:
    """On an untaken branch, or every step of one of its required groups was skipped."""
    if any(all(steps[name].status == StepStatus.SKIPPED for name in group) for group in spec.required):
        return True
    return any(
        steps[condition].status == StepStatus.SUCCEEDED and bool(steps[condition].output) != then
        for condition, then in spec.branches
    )


def run_advance(organization: Organization, run: WorkflowRun) -> None:
    """With the run locked (or just created): skip the steps on untaken branches, send the steps
    whose dependencies have all finished (after commit), and end the run when nothing is left."""
    if run.is_finished:
        return
    definition = definition_of(version=run.version)
    steps = {step.name: step for step in run_steps(run=run)}
    now = timezone.now()
    ready: list[int] = []
    changed = True
    while changed:
        changed = False
        for spec in definition.steps:
            step = steps[spec.name]
            if step.status != StepStatus.QUEUED or step.admitted_at is not None:
                continue
            if not all(steps[name].status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED) for name in spec.depends_on):
                continue
            if _skips(spec, steps):
                step.status, step.finished_at = StepStatus.SKIPPED, now
                step.save(update_fields=["status", "finished_at"])
                changed = True
            else:
                step.admitted_at = now
                step.save(update_fields=["admitted_at"])
                ready.append(step.pk)
    progress_publish(organization=organization, topic=PROGRESS_TOPIC, object_id=run.pk)
    if ready:
        transaction.on_commit(lambda: work_send(organization=organization, kind=STEP_KIND, ids=ready))
    elif all(step.is_finished for step in steps.values()):
        output_step = steps[definition.output]
        output = output_step.output if output_step.status == StepStatus.SUCCEEDED else None
        run_end(organization, run, RunStatus.SUCCEEDED, output=output)


def run_start_running(run: WorkflowRun) -> None:
    """A step of the (locked) run started: the run is running from then on."""
    if run.status == RunStatus.QUEUED:
        run.status, run.started_at = RunStatus.RUNNING, timezone.now()
        run.save(update_fields=["status", "started_at"])


def run_end(
    organization: Organization,
    run: WorkflowRun,
    status: RunStatus,
    *,
    output: Any = None,
    error: tuple[str, str] | None = None,
) -> None:
    """End a run (locked, in the caller's transaction): its waiting steps are cancelled, and the
    run's webhook event goes out after the commit."""
    now = timezone.now()
    run.status, run.finished_at, run.output = status, now, output
    if error is not None:
        run.error_class, run.error_message = error[0][:100], error[1]
    run.save(update_fields=["status", "finished_at", "output", "error_class", "error_message"])
    if status != RunStatus.SUCCEEDED:
        StepRun.objects.filter(run=run, status=StepStatus.QUEUED).update(
            status=StepStatus.CANCELLED,
            finished_at=now,
            next_attempt_at=None,
            error_class="cancelled" if status == RunStatus.CANCELLED else "run_failed",
            error_message="the run was cancelled" if status == RunStatus.CANCELLED else "the run failed before it",
        )
    if not llm_content_policy(organization=organization).store_content:
        _content_drop(run, now)
    progress_publish(organization=organization, topic=PROGRESS_TOPIC, object_id=run.pk)
    _emit(organization, run)
    runs_admit(organization=organization)
    transaction.on_commit(
        functools.partial(
            workflow_run_finished_record,
            outcome=str(status),
            started_at=run.started_at if isinstance(run.started_at, dt.datetime) else None,
            finished_at=now,
        )
    )


def run_cost_add(run: WorkflowRun, step: StepRun, cost: Any) -> None:
    """Count what a step's call cost on the step and its run (both locked, the run first)."""
    if cost:
        StepRun.objects.filter(pk=step.pk).update(cost_usd=F("cost_usd") + cost)
        WorkflowRun.objects.filter(pk=run.pk).update(cost_usd=F("cost_usd") + cost)
        step.cost_usd += cost
        run.cost_usd += cost


def _content_drop(run: WorkflowRun, now: dt.datetime) -> None:
    """No-content mode: a finished run keeps no input and no outputs (counts, costs and timings
    stay), and its webhook event carries none. Steps still in flight record no output either."""
    run.input, run.output, run.content_deleted_at = {}, None, now
    run.save(update_fields=["input", "output", "content_deleted_at"])
    StepRun.objects.filter(run=run).update(output=None, items={}, content_deleted_at=now)


def _emit(organization: Organization, run: WorkflowRun) -> None:
    body: dict[str, Any] = {
        "id": str(run.pk),
        "workflow": {"id": str(run.workflow_id), "name": run.workflow.name},
        "version": run.version.number,
        "status": run.status,
        "output": run.output,
        "cost_usd": str(run.cost_usd),
        "error": {"class": run.error_class, "message": run.error_message} if run.error_class else None,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
    }
    try:
        webhook_event_emit(organization=organization, event_type=f"run.{run.status}", payload={"run": body})
    except WebhookInvalid:  # an output too large for an event: the run itself has it
        body["output"], body["output_omitted"] = None, True
        webhook_event_emit(organization=organization, event_type=f"run.{run.status}", payload={"run": body})


# -- content retention --------------------------------------------------------------------------------


def runs_content_sweep(*, organization: Organization, now: dt.datetime | None = None, batch: int = 500) -> int:
    """Delete the input and outputs of finished runs older than the organization's content
    retention (every finished run in no-content mode), with their steps' outputs: a step's content
    is its run's (a later step reads it while the run goes on). Counts, costs and timings stay."""
    now = now or timezone.now()
    policy = llm_content_policy(organization=organization)
    cutoff = now if not policy.store_content else now - dt.timedelta(days=policy.retention_days)
    swept = 0
    while True:
        with transaction.atomic():
            ids = list(
                WorkflowRun.objects.select_for_update(skip_locked=True)
                .filter(finished_at__lt=cutoff, content_deleted_at=None)
                .values_list("pk", flat=True)[:batch]
            )
            if not ids:
                return swept
            WorkflowRun.objects.filter(pk__in=ids).update(input={}, output=None, content_deleted_at=now)
            StepRun.objects.filter(run_id__in=ids).update(output=None, items={}, content_deleted_at=now)
            swept += len(ids)
