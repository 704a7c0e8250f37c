from django.db import models
from django.db.models.functions import Now


class IdempotencyKey(models.Model):
    """A create request's `Idempotency-Key`, kept per organization (this schema) for a day.

    Claimed (pending) before the create runs, completed with the response in the create's own
    transaction, so a retry either replays the first answer or is told the first is still running.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        DONE = "done"

    key = models.CharField(max_length=255, unique=True)
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now(), db_index=True)
    claimed_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(state__in=["pending", "done"]), name="api_idempotency_state_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(state="pending") | models.Q(response_status__isnull=False),
                name="api_idempotency_done_has_response",
            ),
        ]

    def __str__(self) -> str:
        return self.key
