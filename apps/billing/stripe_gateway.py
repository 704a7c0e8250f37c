"""Every call to Stripe goes through this module: nothing else imports `stripe`.

The client is the stripe SDK's `StripeClient` pointed at settings.STRIPE_API_BASE (the fake Stripe
server in tests). Retries are the SDK's own policy, not a loop of ours: up to
STRIPE_MAX_NETWORK_RETRIES on connection errors, 409 and 5xx, with exponential backoff and jitter,
sending the same Idempotency-Key every time; every create here passes an idempotency key derived
from what it creates, so a retried or repeated create can't make a second object. What still fails
after the retries is raised as `StripeUnavailable` (try later) or `StripeRequestError` (our request
is wrong); callers never see a stripe exception.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import stripe
from django.conf import settings

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from django.http import HttpRequest

    from apps.tenants.models import Organization

__all__ = [
    "MeterEvent",
    "StripeError",
    "StripeNotConfigured",
    "StripeRequestError",
    "StripeSignatureInvalid",
    "StripeUnavailable",
    "billing_portal_session_create",
    "checkout_session_create",
    "client",
    "configured",
    "customer_create",
    "djstripe_mirror",
    "event_verify",
    "invoices_list",
    "meter_event_create",
    "meter_event_summary",
    "meter_events_stream",
    "request_subscriber",
    "subscription_cancel_at_period_end",
    "subscription_retrieve",
]

# Meter events one v2 meter event stream request may carry (Stripe's limit).
METER_STREAM_BATCH = 100


class StripeError(Exception):
    """A Stripe call that did not succeed (the message is safe to log; it carries no secret)."""


class StripeNotConfigured(StripeError):
    """No STRIPE_SECRET_KEY: this installation does not bill through Stripe."""


class StripeUnavailable(StripeError):
    """Stripe could not be reached or answered 5xx after the retries: try again later."""


class StripeRequestError(StripeError):
    """Stripe refused the request (4xx): retrying the same request won't help."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class StripeSignatureInvalid(StripeError):
    """A webhook body whose Stripe-Signature is missing, malformed, stale or wrong."""


def configured() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


@functools.cache
def _client(secret_key: str, api_base: str, retries: int) -> stripe.StripeClient:
    return stripe.StripeClient(
        secret_key,
        base_addresses={"api": api_base, "meter_events": api_base if _is_local(api_base) else None},
        max_network_retries=retries,
    )


def _is_local(api_base: str) -> bool:
    return not api_base.startswith("https://api.stripe.com")


def client() -> stripe.StripeClient:
    if not configured():
        raise StripeNotConfigured("Stripe is not configured (STRIPE_SECRET_KEY is empty)")
    # dj-stripe's sync helpers use the module-level settings: the same base and retries for them.
    stripe.api_base = settings.STRIPE_API_BASE
    stripe.max_network_retries = settings.STRIPE_MAX_NETWORK_RETRIES
    return _client(settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE, settings.STRIPE_MAX_NETWORK_RETRIES)


def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    """One SDK call, its stripe exceptions translated (the SDK has already retried what it may)."""
    try:
        return function(*args, **kwargs)
    except stripe.APIConnectionError as exc:
        raise StripeUnavailable(f"Stripe could not be reached: {exc.user_message or type(exc).__name__}") from exc
    except stripe.StripeError as exc:
        status = exc.http_status
        if status is None or status >= 500 or status == 429:
            raise StripeUnavailable(f"Stripe answered {status}: {exc.user_message or ''}".strip()) from exc
        raise StripeRequestError(str(exc.user_message or exc), status=status, code=exc.code) from exc


def _plain(obj: Any) -> dict[str, Any]:
    """A StripeObject as plain JSON data (what we store and hand on)."""
    data = obj.to_dict(recursive=True, for_json=True) if isinstance(obj, stripe.StripeObject) else obj
    result: dict[str, Any] = json.loads(json.dumps(data))
    return result


# --- customers, Checkout, the billing portal ---------------------------------------------------


def customer_create(*, organization_id: int, email: str, name: str, metadata: Mapping[str, str]) -> dict[str, Any]:
    # One customer per organization, even when the first attempt's answer was lost.
    options: Any = {"idempotency_key": f"cognitionos-customer-{organization_id}"}
    params: Any = {"email": email or None, "name": name, "metadata": dict(metadata)}
    if not email:
        del params["email"]
    return _plain(_call(client().v1.customers.create, params=params, options=options))


def checkout_session_create(
    *,
    customer_id: str,
    price_id: str,
    success_url: str,
    cancel_url: str,
    client_reference_id: str,
    metadata: Mapping[str, str],
    idempotency_key: str,
) -> dict[str, Any]:
    params: Any = {
        "mode": "subscription",
        "customer": customer_id,
        "line_items": [{"price": price_id, "quantity": 1}],
        "success_url": success_url,
        "cancel_url": cancel_url,
        "client_reference_id": client_reference_id,
        "metadata": dict(metadata),
        "subscription_data": {"metadata": dict(metadata)},
    }
    options: Any = {"idempotency_key": idempotency_key}
    return _plain(_call(client().v1.checkout.sessions.create, params=params, options=options))


def billing_portal_session_create(*, customer_id: str, return_url: str, idempotency_key: str) -> dict[str, Any]:
    params: Any = {"customer": customer_id, "return_url": return_url}
    options: Any = {"idempotency_key": idempotency_key}
    return _plain(_call(client().v1.billing_portal.sessions.create, params=params, options=options))


def subscription_retrieve(subscription_id: str) -> dict[str, Any]:
    return _plain(_call(client().v1.subscriptions.retrieve, subscription_id))


def subscription_cancel_at_period_end(subscription_id: str, *, cancel: bool) -> dict[str, Any]:
    params: Any = {"cancel_at_period_end": cancel}
    options: Any = {"idempotency_key": f"cognitionos-cancel-{subscription_id}-{int(cancel)}"}
    return _plain(_call(client().v1.subscriptions.update, subscription_id, params=params, options=options))


def invoices_list(*, customer_id: str, limit: int = 24) -> list[dict[str, Any]]:
    params: Any = {"customer": customer_id, "limit": max(1, min(limit, 100))}
    page = _call(client().v1.invoices.list, params=params)
    return [_plain(invoice) for invoice in page.data]


# Organization deletion (apps.ops.deletion, issue 16): a deleted organization's customer stays at
# Stripe with its invoices (accounting records), unlinked from the organization.
_LIVE_SUBSCRIPTION_STATUSES = ("trialing", "active", "past_due", "unpaid", "incomplete", "paused")


def customer_detach(*, customer_id: str) -> dict[str, Any]:
    """Unlink a customer from its organization, which is being deleted: every subscription still
    live is cancelled at once (nothing more is charged), and the metadata naming the organization
    (id, slug, dj-stripe's subscriber key) is cleared, so Stripe's later events map to no one.
    Idempotent: a second call finds nothing live and clears what is already clear."""
    page = _call(client().v1.subscriptions.list, params={"customer": customer_id, "status": "all", "limit": 100})
    cancelled = []
    for subscription in page.data:
        if subscription["status"] in _LIVE_SUBSCRIPTION_STATUSES:
            _call(client().v1.subscriptions.cancel, subscription["id"])
            cancelled.append(subscription["id"])
    cleared: Any = {"organization_id": "", "organization_slug": "", settings.DJSTRIPE_SUBSCRIBER_CUSTOMER_KEY: ""}
    _call(client().v1.customers.update, customer_id, params={"metadata": cleared})
    return {"customer_id": customer_id, "subscriptions_cancelled": cancelled}


# --- Billing Meters (usage) ----------------------------------------------------------------------


@dataclass(frozen=True)
class MeterEvent:
    event_name: str
    customer_id: str
    value: int
    identifier: str  # unique per usage row: Stripe counts a repeated identifier once
    timestamp: int  # unix seconds


def meter_event_create(event: MeterEvent) -> dict[str, Any]:
    params: Any = {
        "event_name": event.event_name,
        "payload": {"stripe_customer_id": event.customer_id, "value": str(event.value)},
        "identifier": event.identifier,
        "timestamp": event.timestamp,
    }
    options: Any = {"idempotency_key": f"cognitionos-meter-{event.identifier}"}
    return _plain(_call(client().v1.billing.meter_events.create, params=params, options=options))


def meter_events_stream(events: Iterable[MeterEvent]) -> int:
    """Send meter events through the v2 high-throughput stream, up to 100 per request; the count sent."""
    batch = list(events)
    if not batch:
        return 0
    session = _call(client().v2.billing.meter_event_session.create)
    streamer = stripe.StripeClient(
        session.authentication_token,
        base_addresses={"api": settings.STRIPE_API_BASE, "meter_events": _meter_events_base()},
        max_network_retries=settings.STRIPE_MAX_NETWORK_RETRIES,
    )
    sent = 0
    for start in range(0, len(batch), METER_STREAM_BATCH):
        chunk = batch[start : start + METER_STREAM_BATCH]
        params: Any = {
            "events": [
                {
                    "event_name": e.event_name,
                    "identifier": e.identifier,
                    "payload": {"stripe_customer_id": e.customer_id, "value": str(e.value)},
                    "timestamp": _iso(e.timestamp),
                }
                for e in chunk
            ]
        }
        _call(streamer.v2.billing.meter_event_stream.create, params=params)
        sent += len(chunk)
    return sent


def _meter_events_base() -> str:
    return settings.STRIPE_API_BASE if _is_local(settings.STRIPE_API_BASE) else "https://meter-events.stripe.com"


def _iso(timestamp: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def meter_event_summary(*, meter_id: str, customer_id: str, start: int, end: int) -> float:
    """What Stripe has aggregated for one customer on one meter between two unix times."""
    params: Any = {"customer": customer_id, "start_time": start, "end_time": end}
    page = _call(client().v1.billing.meters.event_summaries.list, meter_id, params=params)
    return float(sum(summary.aggregated_value for summary in page.data))


# --- webhooks ------------------------------------------------------------------------------------


def event_verify(payload: bytes, signature_header: str | None) -> dict[str, Any]:
    """The event of a webhook body, if its Stripe-Signature is valid for STRIPE_WEBHOOK_SECRET.

    Stripe's scheme: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, within the tolerance."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        raise StripeSignatureInvalid("no webhook secret is configured: every event is refused")
    if not signature_header:
        raise StripeSignatureInvalid("missing Stripe-Signature header")
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"), signature_header, secret, tolerance=settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS
        )
        event = json.loads(payload)
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError) as exc:
        raise StripeSignatureInvalid(f"invalid Stripe-Signature: {exc}") from exc
    if not isinstance(event, dict) or event.get("object") != "event" or not isinstance(event.get("data"), dict):
        raise StripeSignatureInvalid("the signed body is not a Stripe event")
    return event


# --- dj-stripe ------------------------------------------------------------------------------------


def djstripe_mirror(obj: Mapping[str, Any]) -> bool:
    """Mirror a Stripe object (customer, subscription, invoice, Checkout session) into dj-stripe's
    tables with its `sync_from_stripe_data`, which may read related objects (account, price,
    product) from Stripe. True if mirrored. A Stripe outage raises StripeUnavailable (the webhook
    answers 503 and Stripe retries); anything else dj-stripe trips on is logged and skipped in its
    own savepoint — the mirror is for reading, our own tables decide."""
    from django.db import transaction
    from djstripe import models as djstripe_models

    model = {
        "customer": djstripe_models.Customer,
        "subscription": djstripe_models.Subscription,
        "invoice": djstripe_models.Invoice,
        "checkout.session": djstripe_models.Session,
    }.get(str(obj.get("object")))
    if model is None:
        return False
    client()
    api_key = settings.STRIPE_SECRET_KEY
    stripe_object = stripe.convert_to_stripe_object(dict(obj), api_key=api_key)
    try:
        with transaction.atomic():
            _call(model.sync_from_stripe_data, stripe_object, api_key=api_key)
    except StripeUnavailable:
        raise
    except Exception:
        logger.exception("dj-stripe could not mirror %s %s", obj.get("object"), obj.get("id"))
        return False
    return True


def request_subscriber(request: HttpRequest) -> Organization | None:
    """DJSTRIPE_SUBSCRIBER_MODEL_REQUEST_CALLBACK: the organization whose host the request is on."""
    tenant = getattr(request, "tenant", None)
    return None if tenant is None or tenant.schema_name == "public" else tenant


# --- billing meters: lookups for reconciliation (meters helper) ----------------------------------


def meter_id_for(event_name: str) -> str | None:
    """The id of the active meter with this event name (summaries are read per meter), or None."""
    page = _call(client().v1.billing.meters.list, params={"limit": 100})
    for meter in page.auto_paging_iter():
        if meter.event_name == event_name and meter.status == "active":
            return str(meter.id)
    return None
