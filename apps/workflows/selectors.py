"""Reads of workflows and runs (the current organization's schema)."""

from __future__ import annotations

import functools
from decimal import Decimal
from uuid import UUID

from django.db.models import OuterRef, QuerySet, Subquery, Sum
from django.shortcuts import get_object_or_404

from apps.llm.models import AttemptStatus, UsageAttempt
from apps.tenants.connection import tenant_connection
from apps.workflows.definition import Definition, definition_parse
from apps.workflows.models import StepRun, Workflow, WorkflowRun, WorkflowVersion


def workflow_get(*, workflow_id: UUID) -> Workflow:
    """A workflow of the current organization, or 404."""
    return get_object_or_404(Workflow, pk=workflow_id)


def workflow_latest_version(*, workflow: Workflow) -> WorkflowVersion:
    version = WorkflowVersion.objects.filter(workflow=workflow).order_by("-number").first()
    assert version is not None, "a workflow is created with its first version"
    return version


def workflow_list() -> QuerySet[Workflow]:
    return Workflow.objects.all()


def workflow_versions(*, workflow: Workflow) -> QuerySet[WorkflowVersion]:
    return WorkflowVersion.objects.filter(workflow=workflow).order_by("-number")


def run_get(*, run_id: UUID) -> WorkflowRun:
    return get_object_or_404(WorkflowRun.objects.select_related("workflow", "version"), pk=run_id)


def run_list() -> QuerySet[WorkflowRun]:
    return WorkflowRun.objects.select_related("workflow", "version")


def run_steps(*, run: WorkflowRun) -> list[StepRun]:
    return list(StepRun.objects.filter(run=run).order_by("position"))


@functools.lru_cache(maxsize=512)
def _definition(schema: str, workflow_id: UUID, version_id: int) -> Definition:
    version = WorkflowVersion.objects.get(pk=version_id, workflow_id=workflow_id)
    return definition_parse(version.definition)


def definition_of(*, version: WorkflowVersion) -> Definition:
    """The parsed definition of a version (versions never change, so it is kept per process; the
    workflow's random id in the key keeps a schema re-created under the same name from matching)."""
    return _definition(tenant_connection().schema_name, version.workflow_id, version.pk)


def ledger_open_attempts(*, request_prefix: str) -> tuple[list[str], Decimal]:
    """Request ids with a reservation still open under a prefix (a step's calls), and the total
    reserved: what settling them from their reservations will charge."""
    open_attempts = UsageAttempt.objects.filter(status=AttemptStatus.RESERVED, request_id__startswith=request_prefix)
    ids = sorted(set(open_attempts.values_list("request_id", flat=True)))
    reserved = open_attempts.aggregate(total=Sum("reserved_usd"))["total"] or Decimal(0)
    return ids, reserved


def ledger_cost(*, request_prefix: str) -> Decimal:
    """What the ledger holds for the calls whose request id starts with `request_prefix`."""
    total = UsageAttempt.objects.filter(request_id__startswith=request_prefix).aggregate(total=Sum("cost_usd"))
    return total["total"] or Decimal(0)


def workflow_overview_list() -> QuerySet[Workflow]:
    """Workflows with their latest version's number (`latest_number`) and their last run's status
    (`last_run_status`, None before the first run), in one query whatever the number of them."""
    last_run = WorkflowRun.objects.filter(workflow=OuterRef("pk")).order_by("-created_at", "-id")
    return Workflow.objects.annotate(
        latest_number=Subquery(
            WorkflowVersion.objects.filter(workflow=OuterRef("pk")).order_by("-number").values("number")[:1]
        ),
        last_run_status=Subquery(last_run.values("status")[:1]),
        last_run_at=Subquery(last_run.values("created_at")[:1]),
    )


def run_overview_list(*, workflow: Workflow | None = None, statuses: list[str] | None = None) -> QuerySet[WorkflowRun]:
    """Runs (of one workflow, or all), filtered by status, with what a list shows of them."""
    runs = WorkflowRun.objects.select_related("workflow", "version")
    if workflow is not None:
        runs = runs.filter(workflow=workflow)
    if statuses:
        runs = runs.filter(status__in=statuses)
    return runs
