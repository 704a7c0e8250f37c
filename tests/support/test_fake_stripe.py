"""The fake Stripe's own behaviour: signed delivery the test controls, idempotency, meter dedup."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe
from django.test import override_settings

from apps.billing.stripe_gateway import StripeSignatureInvalid, event_verify
from tests.support.fake_stripe import FakeStripe

SECRET = "whsec_fake_stripe_selftest"


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.answers: list[int] = []  # statuses to answer next (then 200)
        self.received: list[tuple[str, bool]] = []  # (event id, signature valid)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: _Receiver

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with override_settings(STRIPE_WEBHOOK_SECRET=SECRET, STRIPE_WEBHOOK_TOLERANCE_SECONDS=300):
            try:
                event_verify(body, self.headers.get("Stripe-Signature"))
                valid = True
            except StripeSignatureInvalid:
                valid = False
        self.server.received.append((json.loads(body)["id"], valid))
        status = self.server.answers.pop(0) if self.server.answers else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _client(fake: FakeStripe) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_" + "f" * 24, base_addresses={"api": fake.api_base}, max_network_retries=2)


def test_events_are_signed_as_stripe_signs_them_and_delivery_is_under_the_tests_control(receiver: _Receiver) -> None:
    with FakeStripe(webhook_url=receiver.url, webhook_secret=SECRET) as fake:
        client = _client(fake)
        customer = client.v1.customers.create(params={"email": "a@example.com"})
        session = client.v1.checkout.sessions.create(
            params={
                "mode": "subscription",
                "customer": customer.id,
                "line_items": [{"price": "price_x", "quantity": 1}],
                "success_url": "http://example.com/ok",
            }
        )
        # Delivered at once, in order, each with a valid signature.
        fake.complete_checkout(session.id)
        ids = [event["id"] for event in fake.events]
        assert receiver.received == [(event_id, True) for event_id in ids]

        # Held, then delivered reversed and duplicated; a 5xx is kept for redelivery.
        receiver.received.clear()
        fake.hold = True
        subscription_id = fake.all("subscription")[0]["id"]
        fake.subscription_update(subscription_id, cancel_at_period_end=True)
        fake.subscription_update(subscription_id, cancel_at_period_end=False)
        first, second = fake.pending
        receiver.answers = [500]
        assert fake.flush(order="reversed") == [500, 200]
        assert [event_id for event_id, _ in receiver.received] == [second["id"], first["id"]]
        assert fake.undelivered == [second]
        assert fake.redeliver() == [200]
        assert fake.deliver(first, duplicate=2) == [200, 200]

        # Delayed delivery arrives after the delay; a bad signature is refused by the receiver.
        started = time.monotonic()
        fake.deliver_later(first, 0.2).join()
        assert time.monotonic() - started >= 0.2
        fake.deliver(first, signature="t=1,v1=bad")
        assert receiver.received[-1] == (first["id"], False)


def test_the_api_fails_on_demand_and_replays_idempotent_requests() -> None:
    with FakeStripe() as fake:
        client = _client(fake)
        fake.fail_next(1, status=500)
        customer = client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "one"})
        again = client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "one"})
        assert customer.id == again.id
        assert [status for _, _, status in fake.requests] == [500, 200, 200]
        assert len(fake.all("customer")) == 1


def test_meter_events_with_the_same_identifier_count_once() -> None:
    with FakeStripe() as fake:
        client = _client(fake)
        meter = client.v1.billing.meters.create(
            params={"display_name": "Usage", "event_name": "usage", "default_aggregation": {"formula": "sum"}}
        )
        for identifier in ("row-1", "row-1", "row-2"):
            client.v1.billing.meter_events.create(
                params={
                    "event_name": "usage",
                    "payload": {"stripe_customer_id": "cus_1", "value": "7"},
                    "identifier": identifier,
                    "timestamp": 1_800_000_000,
                }
            )
        summary = client.v1.billing.meters.event_summaries.list(
            meter.id, params={"customer": "cus_1", "start_time": 1_799_999_000, "end_time": 1_800_001_000}
        )
        assert summary.data[0].aggregated_value == 14
