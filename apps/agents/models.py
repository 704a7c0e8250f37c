import uuid

from django.db import models
from django.db.models.functions import Now

__all__ = ["POLICIES", "Agent"]

POLICIES = ("cheapest", "fastest", "balanced")


class Agent(models.Model):
    """A named configuration for jobs and workflow `llm` steps: system prompt, model or routing
    policy, sampling, knowledge, budget."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True, default="")
    system_prompt = models.TextField(blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    policy = models.CharField(max_length=20, blank=True, default="")
    min_quality = models.PositiveSmallIntegerField(default=1)
    temperature = models.FloatField(null=True, blank=True)
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    # Knowledge bases (apps.knowledge) searched with each question, the best chunks retrieved into
    # the prompt; none: no retrieval. Deleting a knowledge base drops it from its agents.
    knowledge_bases = models.ManyToManyField("knowledge.KnowledgeBase", blank=True, related_name="agents")
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
                name="agents_agent_model_or_policy",
            ),
            models.CheckConstraint(condition=models.Q(min_quality__range=(1, 5)), name="agents_agent_quality_range"),
            models.CheckConstraint(
                condition=models.Q(temperature__isnull=True) | models.Q(temperature__range=(0, 2)),
                name="agents_agent_temperature_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name
