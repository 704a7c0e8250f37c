"""Deliveries' move onto the durable-work runtime keeps every row: 0004 maps `pending`/`retrying`
to `queued` (an attempt in flight under its lease to `running`), `dispatched_at` to `admitted_at`,
`last_error` to `error_message` with an `error_class`, `delivered_at` to `finished_at`, on a schema
that holds deliveries in every state; the API still answers the statuses it answered before."""

from __future__ import annotations

import datetime as dt
import uuid

from django.utils import timezone

from apps.tenants.models import Organization
from apps.webhooks.models import DeliveryStatus, WebhookDelivery
from apps.work.models import WorkStatus
from tests.support.schema_migrations import constraints_check_now, migrate, models_at

BEFORE = [("webhooks", "0003_delivery_content_deleted")]
AFTER = [("webhooks", "0004_delivery_work_vocabulary")]


def test_0004_keeps_every_delivery_and_carries_its_state_over(tenant: Organization) -> None:
    executor = migrate(BEFORE)
    state = models_at(executor, BEFORE)
    OldEndpoint = state.get_model("webhooks", "WebhookEndpoint")
    OldDelivery = state.get_model("webhooks", "WebhookDelivery")
    endpoint = OldEndpoint.objects.create(
        url="https://hooks.example/in",
        events=["*"],
        secret_key_id="k1",
        secret_nonce=b"n",
        secret_ciphertext=b"c",
        secret_hint="abcd",
    )
    now = timezone.now()
    earlier = now - dt.timedelta(minutes=5)
    later = now + dt.timedelta(minutes=10)
    common = {"endpoint": endpoint, "event_type": "job.succeeded", "event_id": uuid.uuid4()}
    rows = {
        "pending": OldDelivery.objects.create(
            id=uuid.uuid4(), payload={"n": 1}, status="pending", next_attempt_at=now, dispatched_at=now, **common
        ),
        "first_in_flight": OldDelivery.objects.create(
            id=uuid.uuid4(),
            payload={"n": 2},
            status="pending",
            attempts=1,
            next_attempt_at=now,
            locked_until=later,
            last_attempt_at=now,
            **common,
        ),
        "retrying": OldDelivery.objects.create(
            id=uuid.uuid4(),
            payload={"n": 3},
            status="retrying",
            attempts=2,
            next_attempt_at=later,
            last_attempt_at=earlier,
            last_response_status=500,
            last_response_excerpt="boom",
            last_error="HTTP 500",
            last_duration_ms=12,
            **common,
        ),
        "retry_in_flight": OldDelivery.objects.create(
            id=uuid.uuid4(),
            payload={"n": 4},
            status="retrying",
            attempts=3,
            next_attempt_at=now,
            locked_until=later,
            last_attempt_at=now,
            last_error="refused: 10.0.0.1 is a private address",
            **common,
        ),
        "succeeded": OldDelivery.objects.create(
            id=uuid.uuid4(),
            payload={"n": 5},
            status="succeeded",
            attempts=1,
            last_attempt_at=earlier,
            delivered_at=earlier,
            last_response_status=200,
            last_response_excerpt="ok",
            **common,
        ),
        "failed": OldDelivery.objects.create(
            id=uuid.uuid4(),
            payload={"n": 6},
            status="failed",
            attempts=8,
            last_attempt_at=earlier,
            last_response_status=503,
            last_error="HTTP 503",
            content_deleted_at=now,
            **common,
        ),
        "disabled": OldDelivery.objects.create(
            id=uuid.uuid4(),
            payload={"n": 7},
            status="failed",
            last_error="not sent: the endpoint is disabled",
            **common,
        ),
    }
    constraints_check_now()  # the inserts' deferred checks, before the tables change

    migrate(AFTER)

    deliveries = {delivery.pk: delivery for delivery in WebhookDelivery.objects.all()}
    assert set(deliveries) == {row.pk for row in rows.values()}
    got = {name: deliveries[row.pk] for name, row in rows.items()}
    # The API's statuses are what they were.
    assert {name: delivery.delivery_status for name, delivery in got.items()} == {
        "pending": DeliveryStatus.PENDING,
        "first_in_flight": DeliveryStatus.PENDING,
        "retrying": DeliveryStatus.RETRYING,
        "retry_in_flight": DeliveryStatus.RETRYING,
        "succeeded": DeliveryStatus.SUCCEEDED,
        "failed": DeliveryStatus.FAILED,
        "disabled": DeliveryStatus.FAILED,
    }
    pending, retrying = got["pending"], got["retrying"]
    assert (pending.status, pending.attempts, pending.admitted_at, pending.next_attempt_at) == (
        WorkStatus.QUEUED,
        0,
        now,
        now,
    )
    assert (retrying.status, retrying.attempts, retrying.next_attempt_at) == (WorkStatus.QUEUED, 2, later)
    assert (retrying.error_class, retrying.last_error, retrying.last_response_excerpt) == (
        "http_error",
        "HTTP 500",
        "boom",
    )
    # A leased attempt is a running one whose heartbeat is its start: stale, the reaper takes it back.
    for name in ("first_in_flight", "retry_in_flight"):
        held = got[name]
        assert (held.status, held.heartbeat_at, held.started_at, held.next_attempt_at) == (
            WorkStatus.RUNNING,
            now,
            now,
            None,
        )
    assert got["retry_in_flight"].error_class == "refused"
    succeeded, failed, disabled = got["succeeded"], got["failed"], got["disabled"]
    assert (succeeded.status, succeeded.finished_at, succeeded.delivered_at) == (WorkStatus.SUCCEEDED, earlier, earlier)
    assert (failed.finished_at, failed.error_class, failed.attempts, failed.content_deleted_at) == (
        earlier,
        "http_error",
        8,
        now,
    )
    assert (disabled.status, disabled.error_class, disabled.delivered_at) == (
        WorkStatus.FAILED,
        "endpoint_disabled",
        None,
    )
    assert disabled.finished_at is not None
    assert {(d.principal_kind, d.principal_label) for d in deliveries.values()} == {("system", "webhook events")}
