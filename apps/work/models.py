"""The durable-work row every kind of background work inherits (jobs today): one vocabulary of
states and times, and its invariants as database constraints."""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models.functions import Now


class WorkStatus(models.TextChoices):
    QUEUED = "queued"  # waiting: for admission, for a worker, or for its next attempt (next_attempt_at)
    RUNNING = "running"  # a worker holds it and touches heartbeat_at
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = (WorkStatus.SUCCEEDED, WorkStatus.FAILED, WorkStatus.CANCELLED)
# Not finished: what the runtime claims, reaps, admits and may still end.
UNFINISHED = (WorkStatus.QUEUED, WorkStatus.RUNNING)


def work_item_constraints(*, extra_final: tuple[str, ...] = ()) -> list[models.BaseConstraint]:
    """WorkItem's invariants as check constraints (named `<app>_<model>_...`). A kind whose rows may
    also end in statuses of its own (a workflow step is `skipped`) builds its constraints with them:
    they are valid statuses and final ones, with `finished_at` set; the runtime never claims them."""
    final = (*FINISHED, *extra_final)
    return [
        models.CheckConstraint(
            condition=models.Q(status__in=[*WorkStatus.values, *extra_final]),
            name="%(app_label)s_%(class)s_status_valid",
        ),
        models.CheckConstraint(
            condition=models.Q(status__in=final, finished_at__isnull=False)
            | (~models.Q(status__in=final) & models.Q(finished_at__isnull=True)),
            name="%(app_label)s_%(class)s_finished_iff_finished_at",
        ),
        models.CheckConstraint(
            condition=~models.Q(status=WorkStatus.RUNNING)
            | models.Q(started_at__isnull=False, heartbeat_at__isnull=False, attempts__gte=1),
            name="%(app_label)s_%(class)s_running_is_held",
        ),
        models.CheckConstraint(
            condition=models.Q(next_attempt_at__isnull=True) | models.Q(status=WorkStatus.QUEUED),
            name="%(app_label)s_%(class)s_next_attempt_only_queued",
        ),
        models.CheckConstraint(condition=models.Q(cost_usd__gte=0), name="%(app_label)s_%(class)s_cost_not_negative"),
    ]


class WorkItem(models.Model):
    """One unit of durable work. `attempts` numbers the runs a worker started: a run owns the row
    only while `status` is running and `attempts` is still its number, so a run that lost the row
    to the reaper (its heartbeat stopped) can't finish it."""

    status = models.CharField(max_length=10, choices=WorkStatus.choices, default=WorkStatus.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(db_default=Now())
    # Set when the organization's cap lets it go to the queue (fair admission).
    admitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A queued row retried later (a transient refusal or outage) does not run before this.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    error_class = models.CharField(max_length=100, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal(0))
    principal_kind = models.CharField(max_length=20)
    principal_id = models.CharField(max_length=64, blank=True, default="")
    principal_label = models.CharField(max_length=254, blank=True, default="")
    # The content fields were emptied: at the end (no-content mode) or after the retention.
    content_deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        constraints = work_item_constraints()

    @property
    def is_finished(self) -> bool:
        return self.status not in UNFINISHED
