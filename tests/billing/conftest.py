"""Billing tests: the real stripe SDK against the fake Stripe server (tests/support/fake_stripe.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from django.test import Client, override_settings

from tests.support.fake_stripe import FakeStripe

if TYPE_CHECKING:  # the test client's response type exists only in django-stubs
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

WEBHOOK_SECRET = "whsec_test_cognitionos"
WEBHOOK_PATH = "/billing/stripe/webhook/"


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    """A fake Stripe the gateway talks to (no webhook URL: events are held until a test delivers them)."""
    with (
        FakeStripe(webhook_secret=WEBHOOK_SECRET) as fake,
        override_settings(
            STRIPE_SECRET_KEY="sk_test_cognitionosFakeStripeKey0001",
            STRIPE_TEST_SECRET_KEY="sk_test_cognitionosFakeStripeKey0001",
            STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            STRIPE_API_BASE=fake.api_base,
            STRIPE_MAX_NETWORK_RETRIES=2,
        ),
    ):
        fake.hold = True
        yield fake


@pytest.fixture
def stripe_prices(db: None) -> dict[str, str]:
    """Pro and Enterprise sold through Stripe: their versions name a price (rolled back with the test)."""
    from apps.billing.models import PlanVersion

    prices = {"pro": "price_test_pro", "enterprise": "price_test_enterprise"}
    for code, price in prices.items():
        PlanVersion.objects.filter(plan__code=code).update(stripe_price_id=price)
    return prices


def post_event(
    event: dict[str, Any], fake: FakeStripe, *, signature: str | None = None, body: bytes | None = None
) -> Response:
    """POST an event to the webhook endpoint as Stripe would (signed by the fake), through Django's client."""
    payload, header = fake.event_signed(event)
    headers = {} if signature == "" else {"Stripe-Signature": signature if signature is not None else header}
    client = Client(HTTP_HOST="localhost")
    data = body if body is not None else payload
    return client.post(WEBHOOK_PATH, data=data, content_type="application/json", headers=headers)


def post_pending(fake: FakeStripe, order: str | None = None) -> list[Response]:
    pending, fake.pending = fake.pending, []
    if order == "reversed":
        pending.reverse()
    return [post_event(event, fake) for event in pending]
