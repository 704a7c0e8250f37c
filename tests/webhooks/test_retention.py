"""Deliveries are a kind of durable work: the runtime's content-retention sweep removes their
payloads' content and the receivers' response excerpts after each organization's retention."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from apps.webhooks.models import WebhookDelivery
from apps.webhooks.services import DELIVERY, webhook_delivery_attempt, webhook_endpoint_create, webhook_event_emit
from apps.work import tasks
from apps.work.registry import work_kind
from apps.work.services import work_content_sweep
from tests.factories import TEST_ACTOR
from tests.webhooks.receiver import http_receiver

SECRET = "the answer only its organization may keep"


def test_deliveries_register_as_a_kind_with_their_content_fields() -> None:
    assert work_kind("webhook_delivery") is DELIVERY and DELIVERY.model is WebhookDelivery
    assert [name for name, _ in DELIVERY.content_fields] == ["payload", "last_response_excerpt"]


@pytest.mark.usefixtures("sent_tasks")
def test_the_sweep_removes_expired_payloads_and_responses_of_one_organization_only(
    two_tenants: tuple[Organization, Organization],
) -> None:
    a, b = two_tenants
    delivered = {}
    with http_receiver() as receiver:
        receiver.response_body = f"echo: {SECRET}".encode()
        for organization in two_tenants:
            with organization_schema(organization):
                webhook_endpoint_create(organization=organization, actor=TEST_ACTOR, url=receiver.url, events=["*"])
                sent, waiting, recent = (
                    webhook_event_emit(
                        organization=organization,
                        event_type="job.succeeded",
                        payload={"job": {"id": f"j{n}", "status": "succeeded", "result": {"text": SECRET}}},
                    )[0]
                    for n in range(3)
                )
                assert webhook_delivery_attempt(organization=organization, delivery_id=sent.pk) == "succeeded"
                long_ago = timezone.now() - dt.timedelta(days=31)
                WebhookDelivery.objects.filter(pk__in=[sent.pk, waiting.pk]).update(created_at=long_ago)
                delivered[organization.slug] = (sent, waiting, recent)

    swept = tasks.work_maintain(tenant_id=a.pk, duty="sweep")
    assert swept["webhook_delivery"] == 2

    with organization_schema(a):
        sent, waiting, recent = (WebhookDelivery.objects.get(pk=d.pk) for d in delivered[a.slug])
        for expired in (sent, waiting):
            assert expired.content_deleted_at is not None and SECRET not in json.dumps(expired.payload)
            assert expired.payload["content_removed"] is True and expired.payload["job"]["id"] in ("j0", "j1")
        assert sent.last_response_excerpt == "" and sent.last_response_status == 200
        assert (sent.delivery_status, waiting.delivery_status) == ("succeeded", "pending")  # counts and state stay
        assert recent.content_deleted_at is None and SECRET in json.dumps(recent.payload)
    with organization_schema(b):  # the other organization's deliveries are its own business
        sent = WebhookDelivery.objects.get(pk=delivered[b.slug][0].pk)
        assert sent.content_deleted_at is None and SECRET in json.dumps(sent.payload)
        assert SECRET in sent.last_response_excerpt
        assert work_content_sweep(organization=b, kind=DELIVERY) == 2
