import uuid
from decimal import Decimal

from django.db import models
from django.db.models.functions import Now

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


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Job(models.Model):
    """One governed LLM call run by a worker. `admitted_at` is set when the organization's
    concurrency cap lets it go to the queue; `heartbeat_at` proves a worker is still on it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED)
    request = models.JSONField()  # the chat request sent to the engine (OpenAI shape plus our fields)
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    webhook_endpoint_id = models.UUIDField(null=True, blank=True)
    principal_kind = models.CharField(max_length=20)
    principal_id = models.CharField(max_length=64, blank=True, default="")
    principal_label = models.CharField(max_length=254, blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())
    admitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    runs = models.PositiveSmallIntegerField(default=0)  # how many times a worker started it
    result = models.JSONField(null=True, blank=True)  # text, usage, cost_usd, model, cache, finish_reason
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal(0))
    error_class = models.CharField(max_length=100, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    # Prompt and answer removed: at the end (organization stores no content) or after its retention.
    content_removed = models.BooleanField(default=False)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=JobStatus.values), name="jobs_job_status_valid"),
            models.CheckConstraint(
                condition=models.Q(status__in=FINISHED, finished_at__isnull=False)
                | (~models.Q(status__in=FINISHED) & models.Q(finished_at__isnull=True)),
                name="jobs_job_finished_iff_finished_at",
            ),
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
        ]

    def __str__(self) -> str:
        return str(self.id)

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED
