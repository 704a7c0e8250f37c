from django.db import models
from django.db.models.functions import Now


class AuditEvent(models.Model):
    """One thing that changed, in the organization's own schema. Rows are never updated or deleted
    (a database trigger refuses it); the tamper-evident chain and the viewer come later."""

    occurred_at = models.DateTimeField(db_default=Now(), db_index=True)
    actor_kind = models.CharField(max_length=20)
    actor_id = models.CharField(max_length=64, blank=True, default="")
    actor_label = models.CharField(max_length=254)
    action = models.CharField(max_length=100, db_index=True)
    target_type = models.CharField(max_length=100, blank=True, default="")
    target_id = models.CharField(max_length=64, blank=True, default="")
    target_label = models.CharField(max_length=254, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ("-occurred_at", "-id")
        constraints = [
            models.CheckConstraint(
                condition=models.Q(actor_kind__in=["user", "api_key", "operator", "system"]),
                name="audit_event_actor_kind_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action}"
