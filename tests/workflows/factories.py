"""Workflows and a synchronous driver that does what the workers do, in the test's transaction."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from apps.accounts.principals import Principal
from apps.tenants.models import Organization
from apps.work.services import work_execute
from apps.workflows.definitions import workflow_create
from apps.workflows.executor import STEP
from apps.workflows.models import StepRun, StepStatus, Workflow, WorkflowRun
from apps.workflows.runs import run_start

KEY = Principal(kind="api_key", id="7", label="tests (cos_x)")
SUMMARY = {"name": "summary", "type": "llm", "model": "simulated-mini", "prompt": "Summarize: {{ input.text }}"}
FRENCH = {
    "name": "french",
    "type": "llm",
    "policy": "cheapest",
    "prompt": "Translate to French: {{ steps.summary.output }}",
}
EXAMPLE = {"steps": [SUMMARY, FRENCH]}


def workflow_make(organization: Organization, definition: Any = None, *, name: str = "example") -> Workflow:
    return workflow_create(organization=organization, actor=KEY, name=name, definition=definition or EXAMPLE).workflow


def step_execute(*, organization: Organization, run_id: UUID, step_name: str) -> None:
    """What a worker does with the message that sends this step (apps.work.tasks.work_run)."""
    step = StepRun.objects.get(run_id=run_id, name=step_name)
    work_execute(organization=organization, kind=STEP, item_id=step.pk)


def dispatched(run: WorkflowRun) -> list[str]:
    """The steps sent to the queue and not started yet."""
    ready = StepRun.objects.filter(run=run, status=StepStatus.QUEUED, admitted_at__isnull=False)
    return list(ready.order_by("position").values_list("name", flat=True))


def drive(organization: Organization, run: WorkflowRun, *, rounds: int = 50) -> WorkflowRun:
    """Run every dispatched step, round after round, as workers would, until none is left."""
    for _ in range(rounds):
        names = dispatched(run)
        if not names:
            break
        for name in names:
            step_execute(organization=organization, run_id=run.pk, step_name=name)
    run.refresh_from_db()
    return run


def run_through(organization: Organization, workflow: Workflow, data: dict[str, Any]) -> WorkflowRun:
    return drive(organization, run_start(organization=organization, principal=KEY, workflow=workflow, input=data))


def steps_of(run: WorkflowRun) -> dict[str, Any]:  # Any: outputs are JSON of any shape
    return {step.name: step for step in StepRun.objects.filter(run=run)}
