import datetime as dt
import uuid
from urllib.parse import urlsplit

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models.functions import Now

from apps.work.models import FINISHED, WorkItem, WorkStatus


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
    """A delivery's status as the API and docs/webhooks.md show it, read from the runtime's
    (apps.work) status and attempts by `delivery_status`."""

    PENDING = "pending"  # not tried yet (or its first attempt is in flight)
    RETRYING = "retrying"  # tried, failed, another attempt is scheduled at next_attempt_at (or in flight)
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # out of attempts, or the endpoint was disabled


def delivery_status(*, status: str, attempts: int) -> DeliveryStatus:
    """The API's status of a delivery whose runtime status is `status` after `attempts` runs."""
    if status == WorkStatus.SUCCEEDED:
        return DeliveryStatus.SUCCEEDED
    if status in FINISHED:
        return DeliveryStatus.FAILED
    # Queued after an attempt, or running a second one: a retry. Running the first: still pending.
    if attempts > (1 if status == WorkStatus.RUNNING else 0):
        return DeliveryStatus.RETRYING
    return DeliveryStatus.PENDING


def delivery_status_q(status: str) -> models.Q:
    """The rows whose API status is `status` (one of DeliveryStatus)."""
    first_run = models.Q(status=WorkStatus.QUEUED, attempts=0) | models.Q(status=WorkStatus.RUNNING, attempts__lte=1)
    unfinished = models.Q(status=WorkStatus.QUEUED) | models.Q(status=WorkStatus.RUNNING)
    return {
        DeliveryStatus.PENDING: first_run,
        DeliveryStatus.RETRYING: unfinished & ~first_run,
        DeliveryStatus.SUCCEEDED: models.Q(status=WorkStatus.SUCCEEDED),
        DeliveryStatus.FAILED: models.Q(status=WorkStatus.FAILED) | models.Q(status=WorkStatus.CANCELLED),
    }[DeliveryStatus(status)]


class WebhookDelivery(WorkItem):
    """One event sent to one endpoint, as durable work (apps.work, kind "webhook_delivery"): each
    attempt is a numbered run that heartbeats; a receiver's failure is retried on the deliveries'
    own schedule, waiting in the database (`next_attempt_at`) for the beat's dispatch duty, never in
    a broker countdown. `error_message` is the last failure ("HTTP 500"); `content_deleted_at`: the
    payload's content and the response excerpt were removed (retention, or no-content mode)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # db_index=False: webhooks_delivery_log (endpoint, -created_at, -id) serves it.
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    event_type = models.CharField(max_length=100)
    # The same for every endpoint (and every redelivery) of one event: receivers deduplicate on it.
    event_id = models.UUIDField()
    payload = models.JSONField(encoder=DjangoJSONEncoder)
    # The last attempt that reported back: when it started, the receiver's answer, how long it took.
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_response_excerpt = models.CharField(max_length=512, blank=True, default="")
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    # A manual redelivery of a finished delivery points at it.
    redelivery_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta(WorkItem.Meta):
        ordering = ("-created_at",)
        verbose_name_plural = "webhook deliveries"
        constraints = [
            *WorkItem.Meta.constraints,
            models.CheckConstraint(
                condition=~models.Q(status=WorkStatus.SUCCEEDED) | models.Q(attempts__gte=1),
                name="webhooks_delivery_succeeded_after_attempt",
            ),
        ]
        indexes = [
            # The dispatch duty's scan for due retries (only queued rows have a next attempt time).
            models.Index(
                fields=["next_attempt_at"],
                name="webhooks_delivery_due",
                condition=models.Q(next_attempt_at__isnull=False),
            ),
            # The reaper's scan of unfinished deliveries. (ORs, not IN: PostgreSQL prints an IN over
            # varchar in a form that reads back differently, and the tenant clone must equal the template.)
            models.Index(
                fields=["status"],
                name="webhooks_delivery_active",
                condition=models.Q(status=WorkStatus.QUEUED) | models.Q(status=WorkStatus.RUNNING),
            ),
            # The delivery log of an endpoint, newest first (cursor pagination).
            models.Index(fields=["endpoint", "-created_at", "-id"], name="webhooks_delivery_log"),
            # The retention sweep's scan for deliveries that still hold content (it counts from creation).
            models.Index(
                fields=["created_at"],
                name="webhooks_delivery_content",
                condition=models.Q(content_deleted_at=None),
            ),
        ]

    @property
    def delivery_status(self) -> DeliveryStatus:
        return delivery_status(status=self.status, attempts=self.attempts)

    @property
    def delivered_at(self) -> dt.datetime | None:
        return self.finished_at if self.status == WorkStatus.SUCCEEDED else None

    @property
    def last_error(self) -> str:
        return self.error_message

    def __str__(self) -> str:
        return f"{self.event_type} delivery {self.pk}"
