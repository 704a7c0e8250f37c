import uuid

from django.db import models
from django.db.models.functions import Now

from apps.work.models import FINISHED, WorkItem, WorkStatus

__all__ = ["FINISHED", "POLICIES", "Agent", "Job", "JobStatus"]

POLICIES = ("cheapest", "fastest", "balanced")


class Agent(models.Model):
    """A named configuration for jobs: system prompt, model or routing policy, sampling, knowledge, budget."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True, default="")
    system_prompt = models.TextField(blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    policy = models.CharField(max_length=20, blank=True, default="")
    min_quality = models.PositiveSmallIntegerField(default=1)
    temperature = models.FloatField(null=True, blank=True)
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    # Documents (apps.knowledge) whose chunks are retrieved into the prompt; empty: no retrieval.
    knowledge_document_ids = models.JSONField(default=list, blank=True)
    retrieval_top_k = models.PositiveSmallIntegerField(default=4)
    max_cost_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    created_by_label = models.CharField(max_length=254, blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name",)
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(model="") & models.Q(policy__in=POLICIES))
                | (~models.Q(model="") & models.Q(policy="")),
                name="jobs_agent_model_or_policy",
            ),
            models.CheckConstraint(condition=models.Q(min_quality__range=(1, 5)), name="jobs_agent_quality_range"),
            models.CheckConstraint(
                condition=models.Q(temperature__isnull=True) | models.Q(temperature__range=(0, 2)),
                name="jobs_agent_temperature_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name


# A job has the durable-work lifecycle of apps.work (status, attempts, heartbeats, retention).
JobStatus = WorkStatus


class Job(WorkItem):
    """One governed LLM call run by a worker (apps.work runs it: admission per organization,
    claim, heartbeat, retry later, reaper, content retention of `request` and `result`)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    request = models.JSONField()  # the chat request sent to the engine (OpenAI shape plus our fields)
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
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
