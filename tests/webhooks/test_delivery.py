"""Attempts against a real receiver on 127.0.0.1: signatures, retries with backoff, idempotence."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.utils import timezone

from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from apps.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from apps.webhooks.services import (
    DELIVERY,
    WebhookConflict,
    webhook_delivery_attempt,
    webhook_delivery_retry,
    webhook_endpoint_create,
    webhook_endpoint_update,
    webhook_event_emit,
)
from apps.webhooks.signing import webhook_signature_verify
from apps.work.models import WorkStatus
from apps.work.services import work_dispatch, work_reap
from tests.factories import TEST_ACTOR
from tests.webhooks.conftest import SentTasks
from tests.webhooks.receiver import Receiver, http_receiver


def _setup(organization: Organization, receiver: Receiver) -> tuple[WebhookEndpoint, WebhookDelivery]:
    endpoint, secret = webhook_endpoint_create(
        organization=organization, actor=TEST_ACTOR, url=receiver.url, events=["job.*"]
    )
    receiver.secret = secret
    [delivery] = webhook_event_emit(
        organization=organization,
        event_type="job.succeeded",
        payload={"job": {"id": "j-1", "status": "succeeded", "cost_usd": "0.0012"}},
    )
    return endpoint, delivery


def _attempt(organization: Organization, delivery: WebhookDelivery) -> str:
    return webhook_delivery_attempt(organization=organization, delivery_id=delivery.pk)


def _dispatch(organization: Organization) -> int:
    """What the beat does for deliveries: send the due retries, and again those whose task never ran."""
    with organization_schema(organization):
        due = work_dispatch(organization=organization, kind=DELIVERY)
        return due + work_reap(organization=organization, kind=DELIVERY)["resent"]


def _held(delivery: WebhookDelivery, *, attempts: int, beat: dt.datetime) -> None:
    """An attempt in flight on a worker whose last heartbeat was at `beat`."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=WorkStatus.RUNNING,
        attempts=attempts,
        started_at=beat,
        heartbeat_at=beat,
        next_attempt_at=None,
        finished_at=None,
    )


def _make_due(delivery: WebhookDelivery) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now() - dt.timedelta(seconds=1))


@pytest.mark.usefixtures("sent_tasks")
def test_a_delivery_is_signed_and_the_receiver_verifies_it(tenant: Organization) -> None:
    with http_receiver() as receiver:
        _, delivery = _setup(tenant, receiver)
        assert _attempt(tenant, delivery) == "succeeded"
    [request] = receiver.received
    assert request.signature_ok is True
    assert request.method == "POST" and request.path == "/hooks/in"
    assert request.headers["CognitionOS-Event"] == "job.succeeded"
    assert request.headers["CognitionOS-Delivery"] == str(delivery.pk)
    assert request.headers["CognitionOS-Event-Id"] == str(delivery.event_id)
    assert request.headers["Content-Type"] == "application/json"
    body = json.loads(request.body)
    assert body["id"] == str(delivery.event_id) and body["type"] == "job.succeeded"
    assert body["organization"] == tenant.slug
    assert body["data"] == {"job": {"id": "j-1", "status": "succeeded", "cost_usd": "0.0012"}}
    # Any change to the body breaks the signature.
    assert receiver.secret is not None
    with pytest.raises(Exception, match="no signature matches"):
        webhook_signature_verify(
            receiver.secret, request.headers["CognitionOS-Signature"], request.body.replace(b"j-1", b"j-2")
        )
    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (stored.status, stored.attempts, stored.last_response_status) == (DeliveryStatus.SUCCEEDED, 1, 200)
    assert stored.delivered_at is not None and stored.next_attempt_at is None and stored.status != WorkStatus.RUNNING
    assert stored.last_duration_ms is not None and stored.last_response_excerpt == "ok"


@pytest.mark.usefixtures("sent_tasks", "quick_retries")
def test_a_failing_receiver_is_retried_then_the_delivery_fails(tenant: Organization) -> None:
    with http_receiver(statuses=[500]) as receiver:
        receiver.response_body = b"boom"
        _, delivery = _setup(tenant, receiver)
        outcomes = [_attempt(tenant, delivery) for _ in range(4)]
    assert outcomes == ["retrying", "retrying", "failed", "skipped"]
    assert [r.headers["CognitionOS-Attempt"] for r in receiver.received] == ["1", "2", "3"]
    assert all(r.signature_ok for r in receiver.received)
    assert len({r.headers["CognitionOS-Delivery"] for r in receiver.received}) == 1
    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (stored.status, stored.attempts, stored.last_response_status) == (DeliveryStatus.FAILED, 3, 500)
    assert stored.last_error == "HTTP 500" and stored.last_response_excerpt == "boom"
    assert stored.next_attempt_at is None and stored.delivered_at is None


@pytest.mark.usefixtures("sent_tasks", "quick_retries")
def test_a_receiver_that_recovers_gets_the_delivery_on_a_retry(tenant: Organization) -> None:
    with http_receiver(statuses=[503, 200]) as receiver:
        _, delivery = _setup(tenant, receiver)
        assert [_attempt(tenant, delivery), _attempt(tenant, delivery)] == ["retrying", "succeeded"]
        assert _attempt(tenant, delivery) == "skipped"  # a redelivered task for a finished delivery
    assert len(receiver.received) == 2
    # Each attempt is signed afresh, over the same body.
    assert receiver.received[0].body == receiver.received[1].body


@pytest.mark.usefixtures("sent_tasks")
def test_retries_back_off_with_jitter_and_wait_until_due(tenant: Organization, settings: Any) -> None:
    settings.WEBHOOK_RETRY_DELAYS_SECONDS = [10, 600]
    settings.WEBHOOK_MAX_ATTEMPTS = 5
    with http_receiver(statuses=[500]) as receiver:
        _, delivery = _setup(tenant, receiver)
        before = timezone.now()
        assert _attempt(tenant, delivery) == "retrying"
        first = WebhookDelivery.objects.get(pk=delivery.pk).next_attempt_at
        assert first is not None and 7.4 <= (first - before).total_seconds() <= 12.6
        assert _attempt(tenant, delivery) == "skipped"  # not due yet
        _make_due(delivery)
        before = timezone.now()
        assert _attempt(tenant, delivery) == "retrying"
        second = WebhookDelivery.objects.get(pk=delivery.pk).next_attempt_at
        assert second is not None and 449 <= (second - before).total_seconds() <= 751
        _make_due(delivery)
        _attempt(tenant, delivery)
        third = WebhookDelivery.objects.get(pk=delivery.pk).next_attempt_at
        assert third is not None and (third - timezone.now()).total_seconds() >= 449  # the last delay repeats
    assert len(receiver.received) == 3


@pytest.mark.usefixtures("sent_tasks")
def test_retry_after_from_the_receiver_is_honoured(tenant: Organization, settings: Any) -> None:
    settings.WEBHOOK_RETRY_DELAYS_SECONDS = [1]
    with http_receiver(statuses=[429]) as receiver:
        receiver.extra_headers = {"Retry-After": "120"}
        _, delivery = _setup(tenant, receiver)
        assert _attempt(tenant, delivery) == "retrying"
    next_at = WebhookDelivery.objects.get(pk=delivery.pk).next_attempt_at
    assert next_at is not None and (next_at - timezone.now()).total_seconds() > 110


@pytest.mark.usefixtures("sent_tasks", "quick_retries")
def test_a_redirect_is_a_failed_attempt_and_is_not_followed(tenant: Organization) -> None:
    with http_receiver(statuses=[301]) as receiver, http_receiver() as elsewhere:
        receiver.extra_headers = {"Location": elsewhere.url}
        _, delivery = _setup(tenant, receiver)
        assert _attempt(tenant, delivery) == "retrying"
    assert elsewhere.received == []
    assert "redirects are not followed" in WebhookDelivery.objects.get(pk=delivery.pk).last_error


@pytest.mark.usefixtures("sent_tasks", "quick_retries")
def test_a_private_target_is_refused_when_sending_if_the_setting_is_off(tenant: Organization, settings: Any) -> None:
    with http_receiver() as receiver:
        _, delivery = _setup(tenant, receiver)
        settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = False
        assert _attempt(tenant, delivery) == "retrying"
    assert receiver.received == []
    assert WebhookDelivery.objects.get(pk=delivery.pk).last_error.startswith("refused:")


@pytest.mark.usefixtures("sent_tasks")
def test_an_attempt_in_flight_is_not_sent_again(tenant: Organization, settings: Any) -> None:
    with http_receiver() as receiver:
        _, delivery = _setup(tenant, receiver)
        _held(delivery, attempts=1, beat=timezone.now())
        assert _attempt(tenant, delivery) == "skipped"
        assert receiver.received == []
        # The worker holding it died: once its heartbeat is stale the attempt is made again.
        _held(
            delivery, attempts=1, beat=timezone.now() - dt.timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_SECONDS + 1)
        )
        assert _attempt(tenant, delivery) == "succeeded"
    assert WebhookDelivery.objects.get(pk=delivery.pk).attempts == 2
    assert len(receiver.received) == 1


@pytest.mark.usefixtures("sent_tasks", "quick_retries")
def test_a_last_attempt_whose_worker_died_ends_failed_without_another_request(
    tenant: Organization, settings: Any
) -> None:
    with http_receiver() as receiver:
        _, delivery = _setup(tenant, receiver)
        _held(
            delivery, attempts=3, beat=timezone.now() - dt.timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_SECONDS + 1)
        )
        assert _attempt(tenant, delivery) == "skipped"
    assert receiver.received == []
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == DeliveryStatus.FAILED


@pytest.mark.usefixtures("sent_tasks")
def test_deliveries_of_a_disabled_endpoint_fail_without_a_request(tenant: Organization) -> None:
    with http_receiver() as receiver:
        endpoint, delivery = _setup(tenant, receiver)
        webhook_endpoint_update(organization=tenant, actor=TEST_ACTOR, endpoint_id=endpoint.pk, is_active=False)
        assert _attempt(tenant, delivery) == "skipped"
    assert receiver.received == []
    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert stored.status == DeliveryStatus.FAILED and "disabled" in stored.last_error


@pytest.mark.usefixtures("quick_retries")
def test_a_failed_delivery_is_retried_as_a_new_delivery_of_the_same_event(
    tenant: Organization, sent_tasks: SentTasks
) -> None:
    with http_receiver(statuses=[500, 500, 500, 200]) as receiver:
        _, delivery = _setup(tenant, receiver)
        for _ in range(3):
            _attempt(tenant, delivery)
        sent_tasks.clear()
        again = webhook_delivery_retry(organization=tenant, actor=TEST_ACTOR, delivery_id=delivery.pk)
        assert again.pk != delivery.pk and again.event_id == delivery.event_id and again.redelivery_of_id == delivery.pk
        assert _attempt(tenant, again) == "succeeded"
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == DeliveryStatus.FAILED
    assert json.loads(receiver.received[-1].body)["id"] == str(delivery.event_id)


@pytest.mark.usefixtures("sent_tasks")
def test_retrying_a_scheduled_delivery_moves_its_attempt_to_now(tenant: Organization, settings: Any) -> None:
    settings.WEBHOOK_RETRY_DELAYS_SECONDS = [3600]
    with http_receiver(statuses=[500, 200]) as receiver:
        _, delivery = _setup(tenant, receiver)
        assert _attempt(tenant, delivery) == "retrying"
        assert webhook_delivery_retry(organization=tenant, actor=TEST_ACTOR, delivery_id=delivery.pk).pk == delivery.pk
        assert _attempt(tenant, delivery) == "succeeded"
        _held(delivery, attempts=3, beat=timezone.now())
        with pytest.raises(WebhookConflict):
            webhook_delivery_retry(organization=tenant, actor=TEST_ACTOR, delivery_id=delivery.pk)


def test_the_dispatcher_sends_due_attempts_once_per_interval(
    tenant: Organization, sent_tasks: SentTasks, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.JOB_DISPATCH_RESEND_SECONDS = 60
    webhook_endpoint_create(organization=tenant, actor=TEST_ACTOR, url="http://127.0.0.1:9/", events=["*"])
    due, later, sent_recently = (
        webhook_event_emit(organization=tenant, event_type="job.succeeded", payload={"n": n})[0] for n in range(3)
    )
    now = timezone.now()
    WebhookDelivery.objects.filter(pk=due.pk).update(attempts=1, next_attempt_at=now, admitted_at=now)
    WebhookDelivery.objects.filter(pk=later.pk).update(
        attempts=1, next_attempt_at=now + dt.timedelta(minutes=5), admitted_at=now
    )
    WebhookDelivery.objects.filter(pk=sent_recently.pk).update(admitted_at=now)
    assert {d.delivery_status for d in WebhookDelivery.objects.filter(pk__in=[due.pk, later.pk])} == {
        DeliveryStatus.RETRYING
    }
    sent_tasks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert _dispatch(tenant) == 1
    assert [task["delivery_id"] for task in sent_tasks] == [str(due.pk)]
    with django_capture_on_commit_callbacks(execute=True):
        assert _dispatch(tenant) == 0  # sent a moment ago
    WebhookDelivery.objects.filter(pk=due.pk).update(admitted_at=now - dt.timedelta(seconds=61))
    # `later` was scheduled as long ago, but its retry waits for its time: it is not lost.
    WebhookDelivery.objects.filter(pk__in=[sent_recently.pk, later.pk]).update(
        admitted_at=now - dt.timedelta(seconds=61)
    )
    sent_tasks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert _dispatch(tenant) == 2  # their tasks never ran: sent again
    assert sorted(task["delivery_id"] for task in sent_tasks) == sorted([str(due.pk), str(sent_recently.pk)])


def test_one_organizations_deliveries_are_not_attempted_from_another(
    two_tenants: tuple[Organization, Organization], sent_tasks: SentTasks
) -> None:
    a, b = two_tenants
    with http_receiver() as receiver:
        _, delivery = _setup(a, receiver)
        assert webhook_delivery_attempt(organization=b, delivery_id=delivery.pk) == "skipped"
        assert _dispatch(b) == 0
    assert receiver.received == []
