"""Reads of outgoing webhooks (run on the organization's schema, as requests and tasks are)."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from apps.tenants.connection import server_binding_cursor
from apps.webhooks.events import subscription_entries
from apps.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, delivery_status_q

# Asked at the end of every job and run, mostly to find none: a plain statement (building the ORM's
# query cost three times its round trip), prepared, the subscription matched by jsonb's any-of-these-keys.
_SUBSCRIBED = "SELECT id FROM webhooks_webhookendpoint WHERE is_active AND events ?| %s ORDER BY created_at DESC"
_ACTIVE = "SELECT id FROM webhooks_webhookendpoint WHERE is_active AND id = %s"


def webhook_endpoints_receiving(*, event_type: str, endpoint_id: uuid.UUID | None = None) -> list[uuid.UUID]:
    """The active endpoints an event goes to: those subscribed to `event_type`, or with
    `endpoint_id` that endpoint whatever it subscribed to (none if it is gone or disabled)."""
    with server_binding_cursor() as cursor:
        if endpoint_id is None:
            cursor.execute(_SUBSCRIBED, [subscription_entries(event_type)])
        else:
            cursor.execute(_ACTIVE, [endpoint_id])
        return [row[0] for row in cursor.fetchall()]


def webhook_endpoint_list() -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.all()


def webhook_endpoint_get(*, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    """Raises WebhookEndpoint.DoesNotExist."""
    return WebhookEndpoint.objects.get(pk=endpoint_id)


def webhook_delivery_list(*, endpoint_id: uuid.UUID, status: str | None = None) -> QuerySet[WebhookDelivery]:
    """An endpoint's delivery log; `status` filters by one of DeliveryStatus."""
    deliveries = WebhookDelivery.objects.filter(endpoint_id=endpoint_id)
    if status is not None:
        if status not in DeliveryStatus.values:
            raise ValueError(f"status is one of {', '.join(DeliveryStatus.values)}")
        deliveries = deliveries.filter(delivery_status_q(status))
    return deliveries


def webhook_delivery_get(*, delivery_id: uuid.UUID) -> WebhookDelivery:
    """Raises WebhookDelivery.DoesNotExist."""
    return WebhookDelivery.objects.get(pk=delivery_id)
