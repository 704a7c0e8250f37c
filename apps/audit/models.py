from django.db import models
from django.db.models.functions import Now


class AuditEvent(models.Model):
    """One thing that changed, in the organization's own schema. Rows are never updated or deleted
    (a database trigger refuses it), and each one carries the hash of the one before it
    (apps.audit.chain): `sequence` numbers them 1, 2, 3, ... in chain order, one chain per schema."""

    sequence = models.BigIntegerField(editable=False)
    occurred_at = models.DateTimeField(db_default=Now(), db_index=True)
    actor_kind = models.CharField(max_length=20)
    actor_id = models.CharField(max_length=64, blank=True, default="")
    actor_label = models.CharField(max_length=254)
    action = models.CharField(max_length=100, db_index=True)
    target_type = models.CharField(max_length=100, blank=True, default="")
    target_id = models.CharField(max_length=64, blank=True, default="")
    target_label = models.CharField(max_length=254, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    previous_hash = models.CharField(max_length=64, editable=False)
    hash = models.CharField(max_length=64, editable=False)

    class Meta:
        ordering = ("-sequence",)
        constraints = [
            models.CheckConstraint(
                condition=models.Q(actor_kind__in=["user", "api_key", "operator", "system"]),
                name="audit_event_actor_kind_valid",
            ),
            # Two writers that bypassed the chain lock can't both append event N: the chain can't fork.
            models.UniqueConstraint(fields=["sequence"], name="audit_event_sequence_unique"),
            models.CheckConstraint(condition=models.Q(sequence__gte=1), name="audit_event_sequence_positive"),
            models.CheckConstraint(
                condition=models.Q(hash__regex=r"^[0-9a-f]{64}$", previous_hash__regex=r"^[0-9a-f]{64}$"),
                name="audit_event_hashes_hex",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action}"
