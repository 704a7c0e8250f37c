"""Reads of outgoing webhooks (run on the organization's schema, as requests and tasks are)."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from apps.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, delivery_status_q


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
