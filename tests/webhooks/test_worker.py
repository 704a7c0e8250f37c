"""Webhooks on a real Celery worker process, with committed data (integration)."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction
from django_tenants.utils import schema_context

from apps.tenants.models import Organization
from apps.webhooks.models import DeliveryStatus, WebhookDelivery
from apps.webhooks.services import webhook_delivery_attempt, webhook_endpoint_create, webhook_event_emit
from apps.work.tasks import work_maintain_all
from tests.conftest import LiveDb
from tests.factories import TEST_ACTOR
from tests.support.worker import celery_worker
from tests.webhooks.receiver import Receiver, http_receiver

pytestmark = pytest.mark.integration


def _status(organization: Organization, delivery: WebhookDelivery, *, until: set[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        with schema_context(organization.schema_name):
            status = str(WebhookDelivery.objects.get(pk=delivery.pk).delivery_status)
        if status in until or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def _endpoint(organization: Organization, receiver: Receiver) -> None:
    with schema_context(organization.schema_name):
        _, receiver.secret = webhook_endpoint_create(
            organization=organization, actor=TEST_ACTOR, url=receiver.url, events=["job.*"]
        )


def test_a_worker_delivers_an_event_signed_and_retries_through_the_dispatcher(live_db: LiveDb) -> None:
    organization = live_db.organization(slug="webhooks-e2e")
    with (
        http_receiver(statuses=[200, 500, 200]) as receiver,
        celery_worker(concurrency=4, env={"WEBHOOK_RETRY_DELAYS_SECONDS": "0"}),
    ):
        _endpoint(organization, receiver)
        with schema_context(organization.schema_name):
            [first] = webhook_event_emit(organization=organization, event_type="job.succeeded", payload={"n": 1})
        assert _status(organization, first, until={"succeeded", "failed"}, timeout_s=30) == "succeeded"
        [request] = receiver.wait_for(1)
        assert request.signature_ok is True and request.headers["CognitionOS-Delivery"] == str(first.pk)

        # The second event fails once; its retry is sent by the beat's dispatcher, not a countdown.
        with schema_context(organization.schema_name):
            [second] = webhook_event_emit(organization=organization, event_type="job.failed", payload={"n": 2})
        assert _status(organization, second, until={"retrying"}, timeout_s=30) == "retrying"
        work_maintain_all.delay(duty="dispatch")
        assert _status(organization, second, until={"succeeded", "failed"}, timeout_s=30) == "succeeded"
    assert [r.headers["CognitionOS-Attempt"] for r in receiver.received] == ["1", "1", "2"]
    assert all(r.signature_ok for r in receiver.received)


def test_an_attempt_locked_by_another_worker_is_skipped_not_sent_twice(live_db: LiveDb) -> None:
    organization = live_db.organization(slug="webhooks-lock")
    with http_receiver() as receiver:
        _endpoint(organization, receiver)
        with schema_context(organization.schema_name):
            [delivery] = webhook_event_emit(organization=organization, event_type="job.succeeded", payload={})
        locked, release = threading.Event(), threading.Event()

        def other_worker() -> None:
            try:
                with schema_context(organization.schema_name), transaction.atomic():
                    WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
                    locked.set()
                    release.wait(10)
            finally:
                connection.close()

        thread = threading.Thread(target=other_worker)
        thread.start()
        try:
            assert locked.wait(10)
            with schema_context(organization.schema_name):
                assert webhook_delivery_attempt(organization=organization, delivery_id=delivery.pk) == "skipped"
        finally:
            release.set()
            thread.join()
        assert receiver.received == []
        with schema_context(organization.schema_name):
            assert webhook_delivery_attempt(organization=organization, delivery_id=delivery.pk) == "succeeded"
            assert WebhookDelivery.objects.get(pk=delivery.pk).status == DeliveryStatus.SUCCEEDED
    assert len(receiver.received) == 1
