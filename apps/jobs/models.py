import uuid

from django.db import models

from apps.work.models import FINISHED, WorkItem, WorkStatus

__all__ = ["FINISHED", "Job", "JobStatus"]

# A job has the durable-work lifecycle of apps.work (status, attempts, heartbeats, retention).
JobStatus = WorkStatus


class Job(WorkItem):
    """One governed LLM call run by a worker (apps.work runs it: admission per organization,
    claim, heartbeat, retry later, reaper, content retention of `request` and `result`)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    request = models.JSONField()  # the chat request sent to the engine (OpenAI shape plus our fields)
    agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    webhook_endpoint_id = models.UUIDField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)  # text, usage, cost_usd, model, cache, finish_reason

    class Meta(WorkItem.Meta):
        ordering = ("-created_at",)
        constraints = [
            *WorkItem.Meta.constraints,
            models.CheckConstraint(
                condition=~models.Q(status="succeeded") | models.Q(result__isnull=False),
                name="jobs_job_succeeded_has_result",
            ),
        ]
        indexes = [
            # The jobs list (API and portal), newest first by (created_at, id) keyset.
            models.Index(fields=["-created_at", "-id"], name="jobs_job_listed"),
            # Admission: the oldest waiting jobs, and the count of those admitted and unfinished.
            models.Index(
                fields=["created_at"], name="jobs_job_waiting", condition=models.Q(status="queued", admitted_at=None)
            ),
            models.Index(
                fields=["status"],
                name="jobs_job_active",
                # ORs, not IN: an IN over varchar reads back differently in the tenant clone.
                condition=(models.Q(status="queued") | models.Q(status="running"))
                & models.Q(admitted_at__isnull=False),
            ),
            # The content retention sweep: finished jobs that still hold their prompt and answer.
            models.Index(
                fields=["finished_at"], name="jobs_job_content_kept", condition=models.Q(content_deleted_at=None)
            ),
        ]

    @property
    def content_removed(self) -> bool:
        return self.content_deleted_at is not None

    def __str__(self) -> str:
        return str(self.id)
