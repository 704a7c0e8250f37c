import uuid
from urllib.parse import urlsplit

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models.functions import Now


class JsonbTypeof(models.Func):
    function = "jsonb_typeof"
    output_field = models.CharField()


class WebhookEndpoint(models.Model):
    """Where an organization wants events POSTed. The signing secret is encrypted at rest
    (AES-256-GCM, bound to the organization and the endpoint) and shown once, when made."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=500, blank=True, default="")
    # Event types ("job.succeeded"), prefixes ("job.*"), or "*" for every event.
    events = models.JSONField(default=list)
    is_active = models.BooleanField(default=True)
    secret_key_id = models.CharField(max_length=40)
    secret_nonce = models.BinaryField()
    secret_ciphertext = models.BinaryField()
    secret_hint = models.CharField(max_length=12)  # the secret's last characters, to recognise it
    # After a rotation the previous secret still signs (a second v1=) until it expires.
    previous_secret_key_id = models.CharField(max_length=40, blank=True, default="")
    previous_secret_nonce = models.BinaryField(null=True, blank=True)
    previous_secret_ciphertext = models.BinaryField(null=True, blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    created_by_label = models.CharField(max_length=254, blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.CheckConstraint(
                condition=models.Q(url__startswith="https://") | models.Q(url__startswith="http://"),
                name="webhooks_endpoint_url_http",
            ),
            models.CheckConstraint(
                condition=models.lookups.Exact(JsonbTypeof("events"), "array"),
                name="webhooks_endpoint_events_array",
            ),
            models.CheckConstraint(
                condition=models.Q(previous_secret_ciphertext__isnull=True, previous_secret_expires_at__isnull=True)
                | models.Q(previous_secret_ciphertext__isnull=False, previous_secret_expires_at__isnull=False),
                name="webhooks_endpoint_previous_secret_expires",
            ),
        ]

    def __str__(self) -> str:
        # The host only: paths of webhook URLs often carry tokens.
        return f"webhook {urlsplit(self.url).hostname or '?'} ({self.pk})"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # not tried yet
    RETRYING = "retrying"  # tried, failed, another attempt is scheduled at next_attempt_at
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # out of attempts, or the endpoint was disabled or deleted


SCHEDULED = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)


class WebhookDelivery(models.Model):
    """One event sent to one endpoint, with its attempts. Retries are scheduled here
    (`next_attempt_at`) and sent by a beat task, never by Celery countdowns."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_type = models.CharField(max_length=100)
    # The same for every endpoint (and every redelivery) of one event: receivers deduplicate on it.
    event_id = models.UUIDField()
    payload = models.JSONField(encoder=DjangoJSONEncoder)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # An attempt in flight holds the delivery until then; a worker that died releases it by expiry.
    locked_until = models.DateTimeField(null=True, blank=True)
    # When a task for the due attempt was last sent (the beat sends again if it never ran).
    dispatched_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_response_excerpt = models.CharField(max_length=512, blank=True, default="")
    last_error = models.CharField(max_length=1000, blank=True, default="")
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    # A manual redelivery of a finished delivery points at it.
    redelivery_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(db_default=Now())
    delivered_at = models.DateTimeField(null=True, blank=True)
    # The payload's content (outputs, results) and the response excerpt were removed: after the
    # organization's content retention, or at once in no-content mode. Ids, status and costs stay.
    content_deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=DeliveryStatus.values), name="webhooks_delivery_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=SCHEDULED, next_attempt_at__isnull=False)
                | (~models.Q(status__in=SCHEDULED) & models.Q(next_attempt_at__isnull=True)),
                name="webhooks_delivery_scheduled_iff_next_attempt",
            ),
            models.CheckConstraint(
                condition=models.Q(status=DeliveryStatus.SUCCEEDED, delivered_at__isnull=False, attempts__gte=1)
                | (~models.Q(status=DeliveryStatus.SUCCEEDED) & models.Q(delivered_at__isnull=True)),
                name="webhooks_delivery_succeeded_iff_delivered",
            ),
            models.CheckConstraint(
                condition=~models.Q(status=DeliveryStatus.PENDING) | models.Q(attempts=0) | models.Q(attempts=1),
                name="webhooks_delivery_pending_before_first_result",
            ),
            models.CheckConstraint(
                condition=~models.Q(status=DeliveryStatus.RETRYING) | models.Q(attempts__gte=1),
                name="webhooks_delivery_retrying_after_attempt",
            ),
        ]
        indexes = [
            # The beat's scan for due attempts. (ORs, not IN: PostgreSQL prints an IN over varchar in a
            # form that reads back differently, and the tenant clone must equal the template.)
            models.Index(
                fields=["next_attempt_at"],
                name="webhooks_delivery_due",
                condition=models.Q(status=SCHEDULED[0]) | models.Q(status=SCHEDULED[1]),
            ),
            # The delivery log of an endpoint, newest first (cursor pagination).
            models.Index(fields=["endpoint", "-created_at", "-id"], name="webhooks_delivery_log"),
            # The retention sweep's scan for deliveries that still hold content.
            models.Index(
                fields=["created_at"],
                name="webhooks_delivery_content",
                condition=models.Q(content_deleted_at=None),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} delivery {self.pk}"
