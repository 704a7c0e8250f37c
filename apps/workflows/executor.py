"""The step executor: what running one workflow step means, as a kind of durable work (`STEP`,
registered in the app's ready). The runtime (apps.work) claims the step with a numbered attempt,
keeps its heartbeat, retries it later on a transient failure, reaps it when its worker dies, and
calls back here to run it, to settle dead attempts, and when it ended.

Every provider call's request id names the run, the step, the attempt (and the map item), so a
step taken over from a dead worker has that attempt's open reservations settled first; an llm
step's answer commits in the transaction that settles its ledger row. A step's row is only ever
locked after its run's (`lock_first`).
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django_tenants.utils import schema_context

from apps.agents.selectors import agent_find
from apps.agents.services import job_request_build
from apps.billing.selectors import plan_limit
from apps.llm.calls import LlmRefusal, attempts_abandon
from apps.tenants.models import Organization
from apps.work.models import WorkStatus
from apps.work.policy import Failure, failure_classify, max_attempts
from apps.work.principals import principal_from_fields
from apps.work.progress import progress_publish
from apps.work.registry import WorkKind
from apps.work.services import work_finish, work_retry_later
from apps.workflows.definition import Definition, StepSpec
from apps.workflows.models import RUN_FINISHED, RunStatus, StepRun, StepStatus, WorkflowRun
from apps.workflows.runs import (
    PROGRESS_TOPIC,
    STEP_KIND,
    run_advance,
    run_cost_add,
    run_end,
    run_lock,
    run_start_running,
)
from apps.workflows.selectors import definition_of, ledger_open_attempts, run_steps
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


def _request_prefix(run_id: UUID, position: int) -> str:
    return f"wf-{run_id.hex}-{position}-"


# -- the kind's callbacks -----------------------------------------------------------------------------


def _runs_lock(step_ids: list[Any]) -> None:
    """Lock the runs of these steps, in one order (the runtime calls this before it locks steps)."""
    run_ids = StepRun.objects.filter(pk__in=step_ids).values("run_id")
    list(WorkflowRun.objects.select_for_update(of=("self",)).filter(pk__in=run_ids).order_by("pk").values("pk"))


def _abandon(organization: Organization, step: StepRun, attempts: list[int]) -> None:
    """Settle the open calls of the step's dead attempts from their reservations, and count them."""
    with transaction.atomic():
        run = run_lock(step.run_id)
        ids, reserved = ledger_open_attempts(request_prefix=_request_prefix(run.pk, step.position))
        if ids:
            attempts_abandon(organization=organization, request_ids=ids)
            run_cost_add(run, step, reserved)


def _finished(organization: Organization, step: StepRun) -> None:
    """In the transaction that ended the step (its run locked first): go on with the run, or fail it."""
    run = run_lock(step.run_id)
    if step.status == StepStatus.SUCCEEDED:
        run_advance(organization, run)
    elif step.status == StepStatus.FAILED and not run.is_finished:
        run_end(
            organization,
            run,
            RunStatus.FAILED,
            error=(step.error_class, f"step {step.name!r} failed: {step.error_message}"),
        )


def _step_run(organization: Organization, step: StepRun) -> None:
    """Run one claimed step (the runtime keeps its heartbeat and handles what this raises)."""
    started = _enter(organization, step)
    if started is None:
        return
    run, definition = started
    spec = definition.step(step.name)
    context = StepContext(
        organization=organization,
        principal=principal_from_fields(run),
        request_id=f"{_request_prefix(run.pk, spec.index)}{step.attempts}",
    )

    def record(result: StepResult) -> None:
        _succeed(organization, step.pk, step.attempts, result)

    try:
        scope = _scope(run)
        if spec.type == "llm":
            run_llm(context, _llm_body(spec, scope), on_settled=record)
        elif spec.type == "map":
            record(_run_map(run, step, spec, scope, context))
        else:
            record(_run_simple(context, spec, scope))
    except StepFailure as failure:
        transient = _transient(failure)
        if transient is not None and step.attempts < max_attempts():
            # A provider refusal or an outage behind the failure (of one map item, say) that may
            # pass: back to the queue after the policy's backoff, as a job would go.
            work_retry_later(organization=organization, kind=STEP, item=step, error_class=transient.error_class)
            return
        _fail(organization, step, failure.error_class, failure.message)


STEP = WorkKind(
    name=STEP_KIND,
    model=StepRun,
    execute=_step_run,
    on_finished=_finished,
    abandon=_abandon,
    # A step's output and items are its run's content: emptied with the run's (apps.workflows.runs),
    # never at the step's end, since the steps after it read them.
    content_fields=(),
    progress_of=lambda step: (PROGRESS_TOPIC, step.run_id),
    lock_first=_runs_lock,
)


# -- running one step ---------------------------------------------------------------------------------


def _enter(organization: Organization, step: StepRun) -> tuple[WorkflowRun, Definition] | None:
    """The run of a claimed step, now running; None (the step cancelled) if the run has ended."""
    with transaction.atomic():
        run = run_lock(step.run_id)
        if run.is_finished:
            work_finish(
                organization=organization,
                kind=STEP,
                item=step,
                status=WorkStatus.CANCELLED,
                error=("cancelled", f"the run {run.status} before the step ran"),
                attempt=step.attempts,
            )
            return None
        run_start_running(run)
    return run, definition_of(version=run.version)


def _scope(run: WorkflowRun) -> Scope:
    steps = run_steps(run=run)
    return Scope(
        input=run.input,
        outputs={step.name: step.output for step in steps if step.status == StepStatus.SUCCEEDED},
        skipped=frozenset(step.name for step in steps if step.status == StepStatus.SKIPPED),
    )


def _root(error: BaseException) -> BaseException:
    while isinstance(error, StepFailure) and error.__cause__ is not None:
        error = error.__cause__
    return error


def _transient(error: BaseException) -> Failure | None:
    """The transient failure behind `error`, classified by the runtime's one retry policy."""
    failure = failure_classify(_root(error))
    return failure if failure is not None and failure.transient else None


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
    """The step and its run, locked in the one order: the run, then the step."""
    run_id = StepRun.objects.filter(pk=step_id).values_list("run_id", flat=True).get()
    run = run_lock(run_id)
    return run, StepRun.objects.select_for_update().get(pk=step_id)


def _succeed(organization: Organization, step_id: int, attempt: int, result: StepResult) -> None:
    """Record a step's result (in the transaction that settles its call, for llm steps) and send
    the steps it made ready. A run that lost the step (to the reaper) still counts what it cost."""
    with transaction.atomic():
        run, step = _locked(step_id)
        if step.status != StepStatus.RUNNING or step.attempts != attempt:
            run_cost_add(run, step, result.cost_usd)
            return
        run_cost_add(run, step, result.cost_usd)
        output = result.output if run.content_deleted_at is None else None  # no-content mode, run ended
        work_finish(
            organization=organization,
            kind=STEP,
            item=step,
            status=WorkStatus.SUCCEEDED,
            values={
                "output": output,
                "input_tokens": step.input_tokens + result.input_tokens,
                "output_tokens": step.output_tokens + result.output_tokens,
                "model": result.model[:100],
                "cache_layer": result.cache[:8],
            },
            attempt=attempt,
        )


def _fail(organization: Organization, step: StepRun, error_class: str, message: str) -> None:
    """End the step this run owns as failed, which fails its run; cancelled if the run was."""
    with transaction.atomic():
        run = run_lock(step.run_id)
        work_finish(
            organization=organization,
            kind=STEP,
            item=step,
            status=WorkStatus.CANCELLED if run.status == RunStatus.CANCELLED else WorkStatus.FAILED,
            error=(error_class, message),
            attempt=step.attempts,
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
                _item_record(self.context.organization, self.step.pk, self.step.attempts, index, result)

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
    return plan_limit(organization, "map_items")


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


def _item_record(organization: Organization, step_id: int, attempt: int, index: int, result: StepResult) -> None:
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
            # Followers of the run see each item done (items_done), not only the step's end.
            progress_publish(organization=organization, topic=PROGRESS_TOPIC, object_id=run.pk)
        run_cost_add(run, step, result.cost_usd)
