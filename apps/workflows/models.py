"""Workflows (versioned definitions) and their runs, one row per step of each run."""

import uuid
from decimal import Decimal

from django.db import models
from django.db.models.functions import Now

from apps.work.models import FINISHED, WorkItem, WorkStatus, work_item_constraints


class Workflow(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(db_default=Now())
    created_by_label = models.CharField(max_length=254, blank=True, default="")

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class WorkflowVersion(models.Model):
    """A definition as saved; never changed. Saving a workflow again makes the next version."""

    # db_index=False: workflows_version_unique (workflow, number) serves it.
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions", db_index=False)
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    created_at = models.DateTimeField(db_default=Now())
    created_by_label = models.CharField(max_length=254, blank=True, default="")

    class Meta:
        ordering = ("workflow", "-number")
        constraints = [
            models.UniqueConstraint(fields=["workflow", "number"], name="workflows_version_unique"),
            models.CheckConstraint(condition=models.Q(number__gte=1), name="workflows_version_number_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id} v{self.number}"


# A run has the durable-work statuses: the admission of apps.work.admission counts runs by them.
RunStatus = WorkStatus
RUN_FINISHED = FINISHED


class WorkflowRun(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # db_index=False: workflows_run_workflow (workflow, created_at) serves it.
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="runs", db_index=False)
    version = models.ForeignKey(WorkflowVersion, on_delete=models.PROTECT, related_name="runs")
    rerun_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns")
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED)
    input = models.JSONField(default=dict)
    output = models.JSONField(null=True, blank=True)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal(0))
    error_class = models.CharField(max_length=100, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    principal_kind = models.CharField(max_length=20)
    principal_id = models.CharField(max_length=64, blank=True, default="")
    principal_label = models.CharField(max_length=254, blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())
    # Set when the organization's concurrency cap lets the run's steps go to the queue.
    admitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Input and outputs deleted after the organization's content retention (or at once in no-content mode).
    content_deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=RunStatus.values), name="workflows_run_status_valid"),
            models.CheckConstraint(
                condition=models.Q(status__in=RUN_FINISHED, finished_at__isnull=False)
                | (~models.Q(status__in=RUN_FINISHED) & models.Q(finished_at__isnull=True)),
                name="workflows_run_finished_iff_finished_at",
            ),
            models.CheckConstraint(condition=models.Q(cost_usd__gte=0), name="workflows_run_cost_not_negative"),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"], name="workflows_run_status"),
            # The runs list (API and portal), newest first by (created_at, id) keyset.
            models.Index(fields=["-created_at", "-id"], name="workflows_run_listed"),
            models.Index(
                fields=["created_at"],
                name="workflows_run_waiting",
                condition=models.Q(status="queued", admitted_at=None),
            ),
            models.Index(fields=["workflow", "created_at"], name="workflows_run_workflow"),
            models.Index(
                fields=["finished_at"], name="workflows_run_content_kept", condition=models.Q(content_deleted_at=None)
            ),
        ]

    def __str__(self) -> str:
        return str(self.id)

    @property
    def is_finished(self) -> bool:
        return self.status in RUN_FINISHED


class StepStatus(models.TextChoices):
    """The durable-work statuses, and `skipped`: a step on a branch not taken ends without running."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


# What the REST API and the docs call a step waiting to run (`pending` from the start): kept for clients.
STEP_STATUS_SHOWN: dict[str, str] = {StepStatus.QUEUED: "pending"}


class StepRun(WorkItem):
    """One step of one run, a unit of durable work (apps.work runs it: claim, heartbeat, retry
    later, reaper). A map step keeps each item's result in `items` as it finishes, so a retried
    step does not call again for the items already done; its output is their list. Its content
    (output, items) follows its run's: emptied when the run's is (apps.workflows.runs)."""

    # db_index=False: workflows_step_unique (run, name) serves it.
    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="steps", db_index=False)
    name = models.CharField(max_length=64)
    position = models.PositiveSmallIntegerField()  # the step's index in the definition
    status = models.CharField(max_length=10, choices=StepStatus.choices, default=StepStatus.QUEUED)
    output = models.JSONField(null=True, blank=True)
    items = models.JSONField(default=dict, blank=True)  # map steps: {"<index>": {output, cost_usd, ...}}
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    model = models.CharField(max_length=100, blank=True, default="")
    cache_layer = models.CharField(max_length=8, blank=True, default="")
    reused = models.BooleanField(default=False)  # copied from the run this one re-runs

    class Meta(WorkItem.Meta):
        ordering = ("run", "position")
        constraints = [
            *work_item_constraints(extra_final=(StepStatus.SKIPPED,)),
            models.UniqueConstraint(fields=["run", "name"], name="workflows_step_unique"),
        ]
        indexes = [
            models.Index(fields=["heartbeat_at"], name="workflows_step_running", condition=models.Q(status="running")),
            # The reaper: steps sent to the queue that no worker took.
            models.Index(
                fields=["admitted_at"],
                name="workflows_step_admitted",
                condition=models.Q(status="queued", admitted_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}:{self.name}"
