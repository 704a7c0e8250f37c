"""Workflows: save versioned definitions, start runs, run their steps on workers, cancel, re-run.

A run's steps run as Celery tasks, one per step, sent once every step they depend on has finished:
independent steps run in parallel. Every change of a run's state happens with the run's row
locked (the run first, then a step), so two steps finishing at once see each other, and the next
steps are sent exactly once, after the commit that made them ready.

A step task delivered twice does not call twice: it takes the step only if it is pending, or
running with a heartbeat that stopped (its worker died); taking it over settles the dead attempt's
open reservations first. Each provider call's request id names the run, the step, the attempt
(and the map item), and an llm step's answer commits in the transaction that settles its ledger row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.accounts.principals import Principal
from apps.audit.services import audit_record
from apps.jobs.services import job_request_build
from apps.llm.budgets import attempts_abandon
from apps.llm.calls import LlmRefusal
from apps.llm.platform.models import ModelKind
from apps.llm.platform.selectors import catalog
from apps.llm.selectors import llm_content_policy
from apps.tenants.models import Organization
from apps.work.admission import waiting_admit
from apps.work.policy import Failure, backoff_seconds, failure_classify, max_attempts
from apps.work.principals import principal_fields, principal_from_fields
from apps.workflows.definition import (
    MAX_DEFINITION_BYTES,
    Definition,
    DefinitionInvalid,
    Problem,
    StepSpec,
    definition_load,
    definition_parse,
)
from apps.workflows.heartbeat import heartbeats
from apps.workflows.models import (
    RUN_FINISHED,
    RunStatus,
    StepRun,
    StepStatus,
    Workflow,
    WorkflowRun,
    WorkflowVersion,
)
from apps.workflows.selectors import (
    agent_find,
    definition_of,
    ledger_open_attempts,
    run_steps,
    workflow_latest_version,
)
from apps.workflows.steps import (
    StepContext,
    StepFailure,
    StepResult,
    llm_request,
    output_limit,
    run_condition,
    run_http,
    run_llm,
    run_retrieve,
    run_transform,
    too_large,
)
from apps.workflows.templating import OutputTooLarge, Scope, TemplateError, text_size
from cognitionos.refusals import Refusal

logger = logging.getLogger(__name__)

MAX_INPUT_BYTES = 1024 * 1024


class WorkflowNameTaken(Exception):
    """Another workflow of the organization has this name."""


class RunInputInvalid(Refusal):
    """A run's input is refused; `param` names the field at fault (and starts the message)."""

    code = "invalid_input"

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


class RunFinished(Exception):
    """The run already ended; it can't be cancelled."""


class RunNotRerunnable(Exception):
    """Only a failed run can be re-run from its failed step."""


# -- definitions and workflows ------------------------------------------------------------------------


def definition_check(*, raw: object) -> tuple[dict[str, Any], Definition]:
    """Parse and validate a definition, including what needs the database: the models it names
    exist in the catalog and the agents in the organization. Raises DefinitionInvalid."""
    source = definition_load(raw)
    if len(json.dumps(source, default=str)) > MAX_DEFINITION_BYTES:
        raise DefinitionInvalid([Problem("definition", f"a definition is limited to {MAX_DEFINITION_BYTES} bytes")])
    definition = definition_parse(source)
    problems: list[Problem] = []
    models = catalog()
    for step in definition.steps:
        for spec, where in ((step, step.location), (step.inner, f"{step.location}.step")):
            if spec is None or spec.type != "llm":
                continue
            model = spec.config.get("model")
            if model is not None and (model not in models or models[model].model.kind != ModelKind.CHAT):
                problems.append(Problem(f"{where}.model", f"unknown model {model!r}; see the model catalog"))
            agent = spec.config.get("agent")
            if agent is not None and agent_find(reference=agent) is None:
                problems.append(Problem(f"{where}.agent", f"no agent {agent!r} in this organization"))
    if problems:
        raise DefinitionInvalid(problems)
    return source, definition


def _name_free(name: str, workflow: Workflow | None = None) -> None:
    others = Workflow.objects.filter(name=name)
    if workflow is not None:
        others = others.exclude(pk=workflow.pk)
    if others.exists():
        raise WorkflowNameTaken(name)


@transaction.atomic
def workflow_create(*, organization: Organization, actor: Principal, name: str, definition: object) -> WorkflowVersion:
    """A new workflow with its first version."""
    source, _ = definition_check(raw=definition)
    _name_free(name)
    try:
        with transaction.atomic():
            workflow = Workflow.objects.create(name=name, created_by_label=actor.label)
    except IntegrityError as error:  # created concurrently under the same name
        raise WorkflowNameTaken(name) from error
    version = WorkflowVersion.objects.create(
        workflow=workflow, number=1, definition=source, created_by_label=actor.label
    )
    audit_record(
        organization=organization, actor=actor, action="workflow.created", target=workflow, metadata={"version": 1}
    )
    return version


@transaction.atomic
def workflow_update(
    *,
    organization: Organization,
    actor: Principal,
    workflow: Workflow,
    name: str | None = None,
    definition: object | None = None,
) -> WorkflowVersion:
    """Rename a workflow and/or save a new version of its definition (runs keep their version)."""
    workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
    latest = workflow_latest_version(workflow=workflow)
    changes: dict[str, Any] = {}
    if name is not None and name != workflow.name:
        _name_free(name, workflow)
        changes["name"] = {"from": workflow.name, "to": name}
        workflow.name = name
        try:
            with transaction.atomic():
                workflow.save(update_fields=["name"])
        except IntegrityError as error:
            raise WorkflowNameTaken(name) from error
    if definition is not None:
        source, _ = definition_check(raw=definition)
        latest = WorkflowVersion.objects.create(
            workflow=workflow, number=latest.number + 1, definition=source, created_by_label=actor.label
        )
        changes["version"] = latest.number
    if changes:
        audit_record(
            organization=organization, actor=actor, action="workflow.updated", target=workflow, metadata=changes
        )
    return latest


# -- runs ---------------------------------------------------------------------------------------------


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
    run = WorkflowRun.objects.create(workflow=workflow, version=version, input=data, **principal_fields(principal))
    StepRun.objects.bulk_create([StepRun(run=run, name=step.name, position=step.index) for step in definition.steps])
    audit_record(
        organization=organization,
        actor=principal,
        action="workflow.run_started",
        target=run,
        metadata={"workflow": str(workflow.pk), "version": version.number},
    )
    runs_admit(organization=organization, waiting=True)
    return run


@transaction.atomic
def run_cancel(*, organization: Organization, actor: Principal, run: WorkflowRun) -> WorkflowRun:
    """Cancel a run: its pending steps never start; a call already in flight finishes (and is
    billed, its output kept on its step) but no further step runs."""
    run = WorkflowRun.objects.select_for_update(of=("self",)).select_related("version", "workflow").get(pk=run.pk)
    if run.is_finished:
        raise RunFinished(run.status)
    _run_finish(organization, run, RunStatus.CANCELLED, error=("cancelled", f"cancelled by {actor.label}"))
    audit_record(organization=organization, actor=actor, action="workflow.run_cancelled", target=run)
    return run


@transaction.atomic
def run_rerun(*, organization: Organization, actor: Principal, run: WorkflowRun) -> WorkflowRun:
    """A new run of the same version and input that keeps the outputs of the steps that succeeded
    (or were skipped) upstream of the failed steps and runs the failed steps and everything after
    them again."""
    source = WorkflowRun.objects.select_for_update(of=("self",)).select_related("version", "workflow").get(pk=run.pk)
    steps = {step.name: step for step in run_steps(run=source)}
    failed = [name for name, step in steps.items() if step.status == StepStatus.FAILED]
    if source.status != RunStatus.FAILED or not failed:
        raise RunNotRerunnable(source.status)
    if source.content_deleted_at is not None:
        raise RunNotRerunnable("failed, but its outputs were deleted (content retention)")
    definition = definition_of(version=source.version)
    done = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)
    reset = definition.downstream(failed) | {name for name, step in steps.items() if step.status not in done}
    rerun = WorkflowRun.objects.create(
        workflow_id=source.workflow_id,
        version=source.version,
        input=source.input,
        rerun_of=source,
        **principal_fields(actor),
    )
    rows = []
    for spec in definition.steps:
        old = steps[spec.name]
        if spec.name in reset:
            rows.append(StepRun(run=rerun, name=spec.name, position=spec.index))
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
    the queue for everyone. `waiting`: the caller just created a waiting run (skip the cheap check)."""
    if not waiting and not WorkflowRun.objects.filter(status=RunStatus.QUEUED, admitted_at__isnull=True).exists():
        return []
    with transaction.atomic(savepoint=False):
        ids = waiting_admit(table=WorkflowRun._meta.db_table, cap=int(organization.plan.limit("max_concurrent_jobs")))
        for run in WorkflowRun.objects.filter(pk__in=ids).select_related("version"):
            _advance(organization, run, definition_of(version=run.version))
    return ids


# -- advancing a run ----------------------------------------------------------------------------------


def _skips(spec: StepSpec, steps: dict[str, StepRun]) -> bool:
    """On an untaken branch, or every step of one of its required groups was skipped."""
    if any(all(steps[name].status == StepStatus.SKIPPED for name in group) for group in spec.required):
        return True
    return any(
        steps[condition].status == StepStatus.SUCCEEDED and bool(steps[condition].output) != then
        for condition, then in spec.branches
    )


def _advance(organization: Organization, run: WorkflowRun, definition: Definition) -> None:
    """With the run locked (or just created): skip the steps on untaken branches, send the steps
    whose dependencies have all finished (after commit), and finish the run when nothing is left."""
    if run.is_finished:
        return
    steps = {step.name: step for step in run_steps(run=run)}
    now = timezone.now()
    ready: list[str] = []
    changed = True
    while changed:
        changed = False
        for spec in definition.steps:
            step = steps[spec.name]
            if step.status != StepStatus.PENDING or step.dispatched_at is not None:
                continue
            if not all(steps[name].status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED) for name in spec.depends_on):
                continue
            if _skips(spec, steps):
                step.status, step.finished_at = StepStatus.SKIPPED, now
                step.save(update_fields=["status", "finished_at"])
                changed = True
            else:
                step.dispatched_at = now
                step.save(update_fields=["dispatched_at"])
                ready.append(spec.name)
    if ready:
        transaction.on_commit(lambda: _dispatch(organization, run.pk, ready))
    elif all(step.is_finished for step in steps.values()):
        output_step = steps[definition.output]
        output = output_step.output if output_step.status == StepStatus.SUCCEEDED else None
        _run_finish(organization, run, RunStatus.SUCCEEDED, output=output)


def _dispatch(organization: Organization, run_id: UUID, names: list[str], countdown: float | None = None) -> None:
    from apps.workflows.tasks import workflow_step_run

    for name in names:
        if countdown is None:
            workflow_step_run.delay(tenant_id=organization.pk, run_id=str(run_id), step_name=name)
        else:
            workflow_step_run.apply_async(
                kwargs={"tenant_id": organization.pk, "run_id": str(run_id), "step_name": name}, countdown=countdown
            )


def _run_finish(
    organization: Organization,
    run: WorkflowRun,
    status: RunStatus,
    *,
    output: Any = None,
    error: tuple[str, str] | None = None,
) -> None:
    """End a run (locked, in the caller's transaction): its pending steps are cancelled, and the
    run's webhook event goes out after the commit."""
    now = timezone.now()
    run.status, run.finished_at, run.output = status, now, output
    if error is not None:
        run.error_class, run.error_message = error[0][:100], error[1]
    run.save(update_fields=["status", "finished_at", "output", "error_class", "error_message"])
    if status != RunStatus.SUCCEEDED:
        StepRun.objects.filter(run=run, status=StepStatus.PENDING).update(
            status=StepStatus.CANCELLED,
            finished_at=now,
            error_class="cancelled" if status == RunStatus.CANCELLED else "run_failed",
            error_message="the run was cancelled" if status == RunStatus.CANCELLED else "the run failed before it",
        )
    if not llm_content_policy(organization=organization).store_content:
        _content_drop(run, now)
    _emit(organization, run)
    runs_admit(organization=organization)


def _content_drop(run: WorkflowRun, now: dt.datetime) -> None:
    """No-content mode: a finished run keeps no input and no outputs (counts, costs and timings
    stay), and its webhook event carries none. Steps still in flight record no output either."""
    run.input, run.output, run.content_deleted_at = {}, None, now
    run.save(update_fields=["input", "output", "content_deleted_at"])
    StepRun.objects.filter(run=run).update(output=None, items={})


def _emit(organization: Organization, run: WorkflowRun) -> None:
    from apps.webhooks.services import WebhookInvalid, webhook_event_emit

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


# -- running one step ---------------------------------------------------------------------------------


def _request_prefix(run: WorkflowRun | UUID, position: int) -> str:
    run_id = run.pk if isinstance(run, WorkflowRun) else run
    return f"wf-{run_id.hex}-{position}-"


def _step_start(organization: Organization, run_id: UUID, name: str) -> tuple[WorkflowRun, StepRun, Definition] | None:
    """Take the step for this worker, or None if it finished, its run ended, or a live worker has it."""
    now = timezone.now()
    with transaction.atomic():
        run = (
            WorkflowRun.objects.select_for_update(of=("self",))
            .select_related("version", "workflow")
            .filter(pk=run_id)
            .first()
        )
        step = StepRun.objects.select_for_update().filter(run_id=run_id, name=name).first()
        if run is None or step is None or step.is_finished:
            return None
        alive_after = now - dt.timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_SECONDS)
        if step.status == StepStatus.RUNNING and step.heartbeat_at is not None and step.heartbeat_at > alive_after:
            return None  # a redelivered message while a live worker runs it
        if step.attempts:
            _abandon(organization, run, step)  # its earlier worker died: settle its open calls first
        if run.is_finished:
            step.status, step.finished_at = StepStatus.CANCELLED, now
            step.error_class, step.error_message = "cancelled", f"the run {run.status} before the step ran"
            step.save(update_fields=["status", "finished_at", "error_class", "error_message"])
            return None
        if step.attempts >= settings.JOB_MAX_RUNS:
            _step_failed(organization, run, step, "WorkerLost", f"its worker died {step.attempts} times")
            return None
        step.status, step.heartbeat_at, step.attempts = StepStatus.RUNNING, now, step.attempts + 1
        step.started_at = step.started_at or now
        step.save(update_fields=["status", "heartbeat_at", "attempts", "started_at"])
        if run.status == RunStatus.QUEUED:
            run.status, run.started_at, run.heartbeat_at = RunStatus.RUNNING, now, now
            run.save(update_fields=["status", "started_at", "heartbeat_at"])
    return run, step, definition_of(version=run.version)


def _abandon(organization: Organization, run: WorkflowRun, step: StepRun) -> None:
    """Settle the open calls of the step's dead attempts from their reservations, and count them."""
    ids, reserved = ledger_open_attempts(request_prefix=_request_prefix(run, step.position))
    if ids:
        attempts_abandon(organization=organization, request_ids=ids)
        _add_cost(run, step, reserved)


def _add_cost(run: WorkflowRun, step: StepRun, cost: Decimal) -> None:
    if cost:
        step.cost_usd += cost
        step.save(update_fields=["cost_usd"])
        run.cost_usd += cost
        run.save(update_fields=["cost_usd"])


def _scope(run: WorkflowRun) -> Scope:
    steps = run_steps(run=run)
    return Scope(
        input=run.input,
        outputs={step.name: step.output for step in steps if step.status == StepStatus.SUCCEEDED},
        skipped=frozenset(step.name for step in steps if step.status == StepStatus.SKIPPED),
    )


def step_execute(*, organization: Organization, run_id: UUID, step_name: str) -> None:
    """Run one step of a run on this worker (the body of its task)."""
    started = _step_start(organization, run_id, step_name)
    if started is None:
        return
    run, step, definition = started
    spec = definition.step(step_name)
    context = StepContext(
        organization=organization,
        principal=principal_from_fields(run),
        request_id=f"{_request_prefix(run, spec.index)}{step.attempts}",
    )

    def record(result: StepResult) -> None:
        _step_succeed(organization, step.pk, step.attempts, result)

    with heartbeats.running(organization.schema_name, step.pk):
        try:
            scope = _scope(run)
            if spec.type == "llm":
                run_llm(context, _llm_body(spec, scope), on_settled=record)
            elif spec.type == "map":
                record(_run_map(run, step, spec, scope, context))
            else:
                record(_run_simple(context, spec, scope))
        except Exception as error:
            transient = _transient(error)
            if transient is not None and step.attempts < max_attempts():
                # A provider refusal or an outage that may pass: the step runs again later, as a
                # job would (apps.work.policy), instead of failing the whole run.
                _step_retry_later(organization, step.pk, step.attempts, transient.error_class)
            elif isinstance(error, StepFailure):
                _step_fail(organization, step.pk, step.attempts, error.error_class, error.message)
            elif transient is not None:
                _step_fail(organization, step.pk, step.attempts, transient.error_class, transient.message)
            else:
                logger.exception("workflow step %s failed unexpectedly", step_name)
                _step_fail(organization, step.pk, step.attempts, type(error).__name__, "the step failed unexpectedly")


def _transient(error: BaseException) -> Failure | None:
    """The transient failure behind `error` (a step failure caused by an engine refusal that may
    pass, for one item of a map, say), classified by the runtime's one retry policy."""
    root = error
    while isinstance(root, StepFailure) and root.__cause__ is not None:
        root = root.__cause__
    failure = failure_classify(root)
    return failure if failure is not None and failure.transient else None


def _step_retry_later(organization: Organization, step_id: int, attempt: int, error_class: str) -> None:
    """Put the step this attempt owns back in the queue, sent again after the policy's backoff (the
    reaper sends it again if that message is lost). A map step keeps the items already done."""
    with transaction.atomic():
        run, step = _locked(step_id)
        if step.status != StepStatus.RUNNING or step.attempts != attempt:
            return
        if run.is_finished:  # the run ended meanwhile: nothing to retry for
            _step_fail(organization, step_id, attempt, error_class, "the run ended before the step could run again")
            return
        step.status, step.dispatched_at, step.error_class = StepStatus.PENDING, timezone.now(), error_class[:100]
        step.save(update_fields=["status", "dispatched_at", "error_class"])
        delay = backoff_seconds(attempt)
        logger.warning("workflow step %s: %s, retried in %.1f s", step.name, error_class, delay)
        transaction.on_commit(lambda: _dispatch(organization, run.pk, [step.name], countdown=delay))


def _llm_body(spec: StepSpec, scope: Scope) -> dict[str, Any]:
    body = llm_request(spec, scope)
    agent = None
    if spec.config.get("agent") is not None:
        agent = agent_find(reference=spec.config["agent"])
        if agent is None:
            raise StepFailure("agent_not_found", f"no agent {spec.config['agent']!r} in this organization")
    try:
        return job_request_build(request=body, agent=agent)
    except LlmRefusal as error:
        raise StepFailure(error.code, error.message) from error


def _run_simple(context: StepContext, spec: StepSpec, scope: Scope) -> StepResult:
    if spec.type == "retrieve":
        return run_retrieve(context, spec, scope)
    if spec.type == "transform":
        return run_transform(spec, scope)
    if spec.type == "condition":
        return run_condition(spec, scope)
    if spec.type == "http":
        return run_http(spec, scope)
    raise AssertionError(f"no runner for {spec.type} steps")


def _locked(step_id: int) -> tuple[WorkflowRun, StepRun]:
    """The step and its run, locked in that order (the order every writer uses)."""
    run_id = StepRun.objects.filter(pk=step_id).values_list("run_id", flat=True).get()
    run = WorkflowRun.objects.select_for_update(of=("self",)).select_related("version", "workflow").get(pk=run_id)
    return run, StepRun.objects.select_for_update().get(pk=step_id)


def _step_succeed(organization: Organization, step_id: int, attempt: int, result: StepResult) -> None:
    """Record a step's result (in the transaction that settles its call, for llm steps) and send
    the steps it made ready. A worker that lost the step to another still records what it cost."""
    with transaction.atomic():
        run, step = _locked(step_id)
        if step.status != StepStatus.RUNNING or step.attempts != attempt:
            _add_cost(run, step, result.cost_usd)
            return
        output = result.output if run.content_deleted_at is None else None  # no-content mode, run ended
        step.status, step.finished_at, step.output = StepStatus.SUCCEEDED, timezone.now(), output
        step.input_tokens += result.input_tokens
        step.output_tokens += result.output_tokens
        step.model, step.cache_layer = result.model[:100], result.cache[:8]
        step.save(
            update_fields=["status", "finished_at", "output", "input_tokens", "output_tokens", "model", "cache_layer"]
        )
        _add_cost(run, step, result.cost_usd)
        _advance(organization, run, definition_of(version=run.version))


def _step_fail(organization: Organization, step_id: int, attempt: int, error_class: str, message: str) -> None:
    with transaction.atomic():
        run, step = _locked(step_id)
        if step.status != StepStatus.RUNNING or step.attempts != attempt:
            return
        if run.status == RunStatus.CANCELLED:  # stopped because the run was cancelled
            step.status, step.finished_at = StepStatus.CANCELLED, timezone.now()
            step.error_class, step.error_message = error_class[:100], message
            step.save(update_fields=["status", "finished_at", "error_class", "error_message"])
        else:
            _step_failed(organization, run, step, error_class, message)


def _step_failed(organization: Organization, run: WorkflowRun, step: StepRun, error_class: str, message: str) -> None:
    step.status, step.finished_at = StepStatus.FAILED, timezone.now()
    step.error_class, step.error_message = error_class[:100], message
    step.save(update_fields=["status", "finished_at", "error_class", "error_message"])
    if not run.is_finished:
        _run_finish(
            organization,
            run,
            RunStatus.FAILED,
            error=(error_class, f"step {step.name!r} failed: {message}"),
        )


# -- map steps ----------------------------------------------------------------------------------------


class _OutputSize:
    """A map step's output so far, in bytes of text: its items together stay under the step
    output bound, and the items not started yet don't start once it is passed."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.lock = threading.Lock()

    def add(self, output: Any) -> None:
        limit = output_limit()
        with self.lock:
            self.size += _item_size(output)
            if self.size > limit:
                raise too_large("the items' outputs together", limit)


def _item_size(output: Any) -> int:
    try:
        return text_size(output, output_limit())
    except OutputTooLarge:
        return output_limit() + 1


@dataclass(frozen=True)
class _MapRun:
    """One map step's execution: the items and what each item's inner step sees."""

    run_id: UUID
    step: StepRun
    inner: StepSpec
    scope: Scope
    context: StepContext
    items: list[Any]
    stop: threading.Event
    output: _OutputSize

    def item(self, index: int) -> None:
        """Run the inner step for one item, on this pool thread's own connection."""
        try:
            with schema_context(self.context.organization.schema_name):
                self.item_here(index)
        finally:
            connection.close()

    def item_here(self, index: int) -> None:
        """Run the inner step for one item on the current connection."""
        if self.stop.is_set():
            return
        try:
            if WorkflowRun.objects.filter(pk=self.run_id, status__in=RUN_FINISHED).exists():
                self.stop.set()
                return
            scope = self.scope.with_item(self.items[index], index)
            context = dataclasses.replace(self.context, request_id=f"{self.context.request_id}-{index}")

            def record(result: StepResult) -> None:
                _item_record(self.step.pk, self.step.attempts, index, result)

            if self.inner.type == "llm":
                result = run_llm(context, _llm_body(self.inner, scope), on_settled=record)
            else:
                result = _run_simple(context, self.inner, scope)
                record(result)
            self.output.add(result.output)
        except StepFailure as failure:
            self.stop.set()  # the items not started yet won't start
            raise StepFailure(failure.error_class, f"item {index}: {failure.message}") from failure
        except BaseException:
            self.stop.set()
            raise


def map_items_limit(organization: Organization) -> int:
    """How many items one map step may run: the plan's `max_map_items`."""
    return int(organization.plan.limit("max_map_items"))


def _map_items(organization: Organization, spec: StepSpec, scope: Scope) -> list[Any]:
    template = spec.template("items")
    assert template is not None
    try:
        items = template.resolve(scope)
    except TemplateError as error:
        raise StepFailure("template_error", f"items: {error}") from error
    if not isinstance(items, list):
        raise StepFailure("invalid_items", f"items must resolve to a list, not {type(items).__name__}")
    limit = map_items_limit(organization)
    if len(items) > limit:  # before any item runs: a map can't fan out past what the plan allows
        raise StepFailure(
            "map_too_large",
            f"items: {len(items)} items, more than the plan's max_map_items of {limit} for one map step",
        )
    return items


def _run_map(run: WorkflowRun, step: StepRun, spec: StepSpec, scope: Scope, context: StepContext) -> StepResult:
    """Run the inner step over each item, at most `concurrency` at once. Each item's result is
    kept as it finishes (with its ledger row, for llm items), so a retried step only runs the rest."""
    assert spec.inner is not None
    items = _map_items(context.organization, spec, scope)
    todo = [index for index in range(len(items)) if str(index) not in step.items]
    mapping = _MapRun(
        run_id=run.pk,
        step=step,
        inner=spec.inner,
        scope=scope,
        context=context,
        items=items,
        stop=threading.Event(),
        output=_OutputSize(sum(_item_size(item["output"]) for item in step.items.values())),
    )
    concurrency = min(int(spec.config.get("concurrency") or 4), len(todo))
    if concurrency <= 1:  # one at a time: on this thread, no pool
        for index in todo:
            mapping.item_here(index)
    else:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="map") as pool:
            futures = [pool.submit(mapping.item, index) for index in todo]
        for future in futures:  # every item has ended (the pool waited); the first failure wins
            problem = future.exception()
            if problem is not None:
                raise problem
    results = StepRun.objects.values_list("items", flat=True).get(pk=step.pk)
    if mapping.stop.is_set() or any(str(index) not in results for index in range(len(items))):
        raise StepFailure("cancelled", "the run ended while the items ran")
    ordered = [results[str(index)] for index in range(len(items))]
    return StepResult(
        output=[item["output"] for item in ordered],
        input_tokens=sum(item.get("input_tokens", 0) for item in ordered),
        output_tokens=sum(item.get("output_tokens", 0) for item in ordered),
        model=",".join(sorted({item["model"] for item in ordered if item.get("model")})),
    )


def _item_record(step_id: int, attempt: int, index: int, result: StepResult) -> None:
    with transaction.atomic():
        run, step = _locked(step_id)
        if step.status == StepStatus.RUNNING and run.content_deleted_at is None:
            step.items[str(index)] = {
                "output": result.output,
                "cost_usd": str(result.cost_usd),
                "input_tokens": result.input_tokens,
                "output_tokens": result.output_tokens,
                "model": result.model,
                "cache": result.cache,
                "attempt": attempt,
            }
            step.save(update_fields=["items"])
        _add_cost(run, step, result.cost_usd)


# -- recovery -----------------------------------------------------------------------------------------


def runs_reap(*, organization: Organization, now: dt.datetime | None = None) -> dict[str, int]:
    """Send again the steps whose worker died (heartbeat stopped) or whose message was lost
    (sent long ago, never started); the step task takes them over."""
    now = now or timezone.now()
    dead_before = now - dt.timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_SECONDS)
    lost_before = now - dt.timedelta(seconds=settings.JOB_DISPATCH_RESEND_SECONDS)
    with transaction.atomic():
        dead = list(
            StepRun.objects.select_for_update(skip_locked=True)
            .filter(status=StepStatus.RUNNING, heartbeat_at__lt=dead_before)
            .exclude(dispatched_at__gte=dead_before)
            .values_list("pk", "run_id", "name")
        )
        lost = list(
            StepRun.objects.select_for_update(skip_locked=True)
            .filter(status=StepStatus.PENDING, dispatched_at__lt=lost_before)
            .values_list("pk", "run_id", "name")
        )
        resend = dead + lost
        if resend:
            StepRun.objects.filter(pk__in=[pk for pk, _, _ in resend]).update(dispatched_at=now)
            transaction.on_commit(lambda: _resend(organization, [(run_id, name) for _, run_id, name in resend]))
    if resend:
        logger.warning("workflow steps reaped", extra={"dead": len(dead), "lost": len(lost)})
    runs_admit(organization=organization)  # a run that waited while another ended in a race
    return {"dead": len(dead), "lost": len(lost)}


def _resend(organization: Organization, steps: list[tuple[UUID, str]]) -> None:
    for run_id, name in steps:
        _dispatch(organization, run_id, [name])


def runs_content_sweep(*, organization: Organization, now: dt.datetime | None = None, batch: int = 500) -> int:
    """Delete the input and outputs of finished runs older than the organization's content
    retention (every finished run in no-content mode). Counts, costs and timings stay."""
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
            StepRun.objects.filter(run_id__in=ids).update(output=None, items={})
            swept += len(ids)
