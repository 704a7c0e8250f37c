"""Stripe webhook events applied to the organization: subscriptions, invoices, its plan and status.

The view (apps.billing.views.stripe_webhook) verifies the signature and calls `stripe_event_process`
with the event; everything here happens in one transaction per event:

- Idempotent: the event id is recorded (StripeEvent, unique) in the transaction that applies it; an
  id seen again, even concurrently (the second insert waits for the first's commit), changes nothing.
- Which organization: only the customer id, through our StripeCustomer mapping, decides. An event
  whose customer we don't know is recorded as ignored; metadata or client_reference_id never route
  an event to an organization (a mismatch is ignored too).
- Order-independent: each subscription and invoice keeps the creation time and id of the newest
  event applied to it. An older event is recorded as stale and changes nothing. Two different events
  of the same second can't be ordered by time: then the subscription is read from Stripe as it is
  now and that is applied. A canceled subscription stays canceled (Stripe never revives one).
- The organization follows its current subscription: the plan from the price id (the plan version
  whose stripe_price_id it is), the subscription state (entitlements read it: past due starts the
  grace period), the organization's status (past_due while the subscription is), and Free when the
  subscription ends. An old subscription ending while a newer one is live changes nothing.
  The plan and state changes go through apps.billing.services (audited in the organization's log),
  and the event itself is audited as `billing.stripe_event`.
- No call to Stripe while a row is locked: when applying finds that it needs Stripe's current state
  of a subscription, it rolls back, the state is read with no transaction open, and the event is
  applied again with it (a slow Stripe never holds an organization's lock).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.db import IntegrityError, transaction

from apps.accounts.principals import Principal
from apps.audit.services import audit_record
from apps.billing import stripe_gateway
from apps.billing.models import (
    FREE_PLAN_CODE,
    OrganizationPlanPeriod,
    OrganizationSubscription,
    PlanVersion,
    SubscriptionStatus,
)
from apps.billing.services import entitlements_changed_send, organization_plan_change, organization_subscription_update
from apps.billing.stripe_gateway import StripeError
from apps.billing.stripe_models import StripeCustomer, StripeEvent, StripeInvoice, StripeSubscription
from apps.tenants.models import Organization

logger = logging.getLogger(__name__)

STRIPE_ACTOR = Principal.system("stripe")

SUBSCRIPTION_EVENTS = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
    }
)
INVOICE_EVENTS = frozenset(
    {
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "invoice.voided",
        "invoice.marked_uncollectible",
        "invoice.updated",
    }
)
HANDLED_EVENTS = SUBSCRIPTION_EVENTS | INVOICE_EVENTS | {"checkout.session.completed"}

# Stripe subscription statuses that end the plan (Free from then on).
ENDED = frozenset({"canceled", "incomplete_expired", "paused"})
# Stripe status -> ours (apps.billing.models.SubscriptionStatus).
STATUS_MAP = {
    "active": SubscriptionStatus.ACTIVE,
    "trialing": SubscriptionStatus.TRIALING,
    "past_due": SubscriptionStatus.PAST_DUE,
    "unpaid": SubscriptionStatus.UNPAID,
    "incomplete": SubscriptionStatus.INCOMPLETE,
    "canceled": SubscriptionStatus.CANCELED,
    "incomplete_expired": SubscriptionStatus.CANCELED,
    "paused": SubscriptionStatus.CANCELED,
}
# An invoice's status only moves forward; on a same-second tie the further one wins.
INVOICE_RANK = {"draft": 0, "open": 1, "paid": 2, "void": 2, "uncollectible": 2}


class EventMalformed(ValueError):
    """A signed event without the fields every Stripe event has."""


class _StripeStateNeeded(Exception):
    """Applying needs Stripe's current state of this subscription: read it outside the lock, retry."""

    def __init__(self, subscription_id: str) -> None:
        super().__init__(subscription_id)
        self.subscription_id = subscription_id


def _stripe_state(fetched: dict[str, dict[str, Any]], subscription_id: str) -> dict[str, Any]:
    state = fetched.get(subscription_id)
    if state is None:
        raise _StripeStateNeeded(subscription_id)
    return state


def _time(value: Any) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(int(value), tz=dt.UTC) if value not in (None, "") else None


def _id_of(value: Any) -> str:
    """A reference that may be expanded (`{"id": ...}`) or not (`"cus_..."`)."""
    if isinstance(value, dict):
        return str(value.get("id") or "")
    return str(value or "")


def stripe_event_process(*, event: dict[str, Any]) -> StripeEvent.Outcome | None:
    """Apply one verified event; None when this event id was processed before."""
    try:
        event_id = str(event["id"])
        event_type = str(event["type"])
        created = _time(event["created"])
        obj = event["data"]["object"]
        assert created is not None and isinstance(obj, dict)
    except (KeyError, TypeError, ValueError, AssertionError) as exc:
        raise EventMalformed(f"not a Stripe event: {exc}") from exc
    # Stripe's current state of subscriptions, read between attempts (never under a lock).
    fetched: dict[str, dict[str, Any]] = {}
    while True:
        try:
            outcome = _event_apply(event_id, event_type, created, obj, fetched)
            break
        except _StripeStateNeeded as need:
            if need.subscription_id in fetched:
                raise RuntimeError(f"applying {event_id} asked twice for {need.subscription_id}") from need
            fetched[need.subscription_id] = stripe_gateway.subscription_retrieve(need.subscription_id)
    if outcome is None:
        return None
    if outcome == StripeEvent.Outcome.APPLIED:
        _mirror(obj)
    logger.info("stripe event %s %s: %s", event_id, event_type, outcome)
    return outcome


def _mirror(obj: dict[str, Any]) -> None:
    """dj-stripe's tables follow what was applied (never a stale state), after the commit: the
    mirror may read related objects from Stripe, which must not happen under the organization's
    lock. It is for reading; our own tables decide. An outage leaves it behind until the object's
    next event (the event itself is applied and answered 200)."""
    try:
        stripe_gateway.djstripe_mirror(obj)
    except StripeError as exc:
        logger.warning("dj-stripe mirror of %s %s deferred: %s", obj.get("object"), obj.get("id"), exc)


def _event_apply(
    event_id: str,
    event_type: str,
    created: dt.datetime,
    obj: dict[str, Any],
    fetched: dict[str, dict[str, Any]],
) -> StripeEvent.Outcome | None:
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = StripeEvent.objects.create(
                    event_id=event_id, type=event_type[:100], created=created, outcome=StripeEvent.Outcome.IGNORED
                )
        except IntegrityError:
            return None  # processed before (or right now by a concurrent delivery, which committed)
        organization = _organization_of(obj, event_type)
        outcome = StripeEvent.Outcome.IGNORED
        if organization is not None and event_type in HANDLED_EVENTS:
            # One event of an organization at a time: ordering decisions read what the last one wrote.
            organization = Organization.objects.select_for_update().get(pk=organization.pk)
            if event_type in SUBSCRIPTION_EVENTS:
                outcome = _subscription_event(organization, obj, fetched, event_id=event_id, created=created)
            elif event_type in INVOICE_EVENTS:
                outcome = _invoice_event(organization, obj, event_type, event_id=event_id, created=created)
            else:
                outcome = _checkout_completed(organization, obj, fetched, event_id=event_id, created=created)
            audit_record(
                organization=organization,
                actor=STRIPE_ACTOR,
                action="billing.stripe_event",
                metadata={"event": event_id, "type": event_type, "outcome": str(outcome), "object": _id_of(obj)},
            )
        record.organization = organization
        record.outcome = outcome
        record.save(update_fields=["organization", "outcome"])
    return outcome


def _organization_of(obj: dict[str, Any], event_type: str) -> Organization | None:
    customer_id = _id_of(obj.get("customer"))
    if not customer_id:
        return None
    mapping = StripeCustomer.objects.select_related("organization").filter(customer_id=customer_id).first()
    if mapping is None:
        logger.warning("stripe event %s for unknown customer %s: ignored", event_type, customer_id)
        return None
    return mapping.organization


# --- subscriptions ----------------------------------------------------------------------------------


def _period(sub: dict[str, Any]) -> tuple[dt.datetime | None, dt.datetime | None]:
    # Newer API versions keep the period on the items; older ones on the subscription.
    start, end = sub.get("current_period_start"), sub.get("current_period_end")
    items = (sub.get("items") or {}).get("data") or []
    if (start is None or end is None) and items:
        start, end = items[0].get("current_period_start"), items[0].get("current_period_end")
    return _time(start), _time(end)


def _price_of(sub: dict[str, Any]) -> str:
    items = (sub.get("items") or {}).get("data") or []
    return _id_of(items[0].get("price")) if items else ""


def _subscription_event(
    organization: Organization,
    sub: dict[str, Any],
    fetched: dict[str, dict[str, Any]],
    *,
    event_id: str,
    created: dt.datetime,
) -> StripeEvent.Outcome:
    subscription_id = _id_of(sub.get("id"))
    row = StripeSubscription.objects.select_for_update().filter(subscription_id=subscription_id).first()
    if row is not None and row.organization_id != organization.pk:
        return StripeEvent.Outcome.IGNORED
    if row is not None:
        if created < row.event_created:
            return StripeEvent.Outcome.STALE
        if created == row.event_created and event_id != row.event_id:
            # Same second: the events' order is unknown; Stripe's current state is the answer.
            sub = _stripe_state(fetched, subscription_id)
        if row.status in ENDED and sub.get("status") not in ENDED:
            return StripeEvent.Outcome.STALE
    row = _subscription_store(organization, row, sub, event_id=event_id, created=created)
    _organization_follow(organization, row)
    return StripeEvent.Outcome.APPLIED


def _subscription_store(
    organization: Organization,
    row: StripeSubscription | None,
    sub: dict[str, Any],
    *,
    event_id: str,
    created: dt.datetime,
) -> StripeSubscription:
    start, end = _period(sub)
    values = {
        "organization": organization,
        "customer_id": _id_of(sub.get("customer")),
        "status": str(sub.get("status") or "incomplete")[:30],
        "price_id": _price_of(sub)[:255],
        "cancel_at_period_end": bool(sub.get("cancel_at_period_end")),
        "current_period_start": start,
        "current_period_end": end,
        "created": _time(sub.get("created")) or created,
        "event_created": created,
        "event_id": event_id,
    }
    if row is None:
        return StripeSubscription.objects.create(subscription_id=_id_of(sub.get("id")), **values)
    for name, value in values.items():
        setattr(row, name, value)
    row.save()
    return row


def _version_for_price(organization: Organization, price_id: str) -> PlanVersion | None:
    """The plan version a price id stands for: the organization's own, if it is on one with that
    price (versions of a plan share a price until its price changes), else the newest."""
    if not price_id:
        return None
    current = (
        OrganizationPlanPeriod.objects.select_related("plan_version")
        .filter(organization_id=organization.pk, ends_at__isnull=True)
        .first()
    )
    if current is not None and current.plan_version.stripe_price_id == price_id:
        return current.plan_version
    return PlanVersion.objects.select_related("plan").filter(stripe_price_id=price_id).order_by("-number").first()


def _organization_follow(organization: Organization, row: StripeSubscription) -> None:
    """Bring the organization's plan, subscription state and status in line with this subscription,
    if it is the one that governs the organization."""
    state, _ = OrganizationSubscription.objects.select_for_update().get_or_create(organization_id=organization.pk)
    current_id = state.stripe_subscription_id
    if current_id and current_id != row.subscription_id:
        current = StripeSubscription.objects.filter(subscription_id=current_id).first()
        live = current is not None and current.status not in ENDED
        if row.status in ENDED or (live and current is not None and current.created > row.created):
            return  # an older or ended subscription doesn't govern while another is live
    ended = row.status in ENDED
    if ended:
        free = PlanVersion.objects.filter(plan__code=FREE_PLAN_CODE).order_by("-number").first()
        if free is not None:
            organization_plan_change(
                organization=organization, plan=free, reason=OrganizationPlanPeriod.Reason.STRIPE, actor=STRIPE_ACTOR
            )
    elif row.status in ("active", "trialing", "past_due", "unpaid"):
        version = _version_for_price(organization, row.price_id)
        if version is None:
            logger.error("subscription %s has price %r that no plan version names", row.subscription_id, row.price_id)
        else:
            organization_plan_change(
                organization=organization,
                plan=version,
                reason=OrganizationPlanPeriod.Reason.STRIPE,
                actor=STRIPE_ACTOR,
            )
    wanted: dict[str, Any] = {
        "status": STATUS_MAP.get(row.status, SubscriptionStatus.INCOMPLETE),
        "current_period_start": row.current_period_start,
        "current_period_end": row.current_period_end,
        "cancel_at_period_end": row.cancel_at_period_end and not ended,
        "stripe_subscription_id": row.subscription_id,
    }
    start, end = wanted["current_period_start"], wanted["current_period_end"]
    if start is not None and end is not None and end <= start:
        wanted["current_period_start"] = wanted["current_period_end"] = None  # the state's check refuses it
    changes = {name: value for name, value in wanted.items() if getattr(state, name) != value}
    if changes:
        organization_subscription_update(organization=organization, actor=STRIPE_ACTOR, **changes)
    _organization_status_follow(organization, row.status)


def _organization_status_follow(organization: Organization, status: str) -> None:
    """Past due while the subscription is; active again once paid (or ended). A suspended or
    deleting organization is the operators' decision and stays as it is."""
    target = Organization.Status.PAST_DUE if status in ("past_due", "unpaid") else Organization.Status.ACTIVE
    if organization.status == target or organization.status not in (
        Organization.Status.ACTIVE,
        Organization.Status.PAST_DUE,
    ):
        return
    previous = organization.status
    Organization.objects.filter(pk=organization.pk).update(status=target)
    organization.status = target
    audit_record(
        organization=organization,
        actor=STRIPE_ACTOR,
        action="organization.status_changed",
        target=organization,
        metadata={"from": previous, "to": str(target), "reason": f"Stripe subscription {status}"},
    )
    entitlements_changed_send(organization)


# --- invoices ---------------------------------------------------------------------------------------


def _invoice_subscription(invoice: dict[str, Any]) -> str:
    direct = _id_of(invoice.get("subscription"))
    if direct:
        return direct
    parent = invoice.get("parent") or {}
    return _id_of((parent.get("subscription_details") or {}).get("subscription"))


def _invoice_event(
    organization: Organization, invoice: dict[str, Any], event_type: str, *, event_id: str, created: dt.datetime
) -> StripeEvent.Outcome:
    invoice_id = _id_of(invoice.get("id"))
    status = str(invoice.get("status") or "draft")[:30]
    row = StripeInvoice.objects.select_for_update().filter(invoice_id=invoice_id).first()
    if row is not None and row.organization_id != organization.pk:
        return StripeEvent.Outcome.IGNORED
    stale = row is not None and (
        created < row.event_created
        or (created == row.event_created and INVOICE_RANK.get(status, 0) < INVOICE_RANK.get(row.status, 0))
    )
    if not stale:
        values = {
            "organization": organization,
            "subscription_id": _invoice_subscription(invoice)[:255],
            "status": status,
            "number": str(invoice.get("number") or "")[:100],
            "currency": str(invoice.get("currency") or "usd")[:3],
            "amount_due": int(invoice.get("amount_due") or 0),
            "amount_paid": int(invoice.get("amount_paid") or 0),
            "hosted_invoice_url": str(invoice.get("hosted_invoice_url") or "")[:1000],
            "period_start": _time(invoice.get("period_start")),
            "period_end": _time(invoice.get("period_end")),
            "created": _time(invoice.get("created")) or created,
            "event_created": created,
        }
        StripeInvoice.objects.update_or_create(invoice_id=invoice_id, defaults=values)
    moved = _invoice_payment_effect(organization, invoice, event_type, event_id=event_id, created=created)
    return StripeEvent.Outcome.STALE if stale and not moved else StripeEvent.Outcome.APPLIED


def _invoice_payment_effect(
    organization: Organization, invoice: dict[str, Any], event_type: str, *, event_id: str, created: dt.datetime
) -> bool:
    """A failed payment makes the subscription past due, a paid invoice makes a past-due one active
    again — unless a newer event about the subscription was applied already."""
    if event_type == "invoice.payment_failed":
        from_statuses, to_status = ("active", "trialing"), "past_due"
    elif event_type in ("invoice.paid", "invoice.payment_succeeded"):
        from_statuses, to_status = ("past_due", "unpaid"), "active"
    else:
        return False
    subscription_id = _invoice_subscription(invoice)
    row = StripeSubscription.objects.select_for_update().filter(subscription_id=subscription_id).first()
    if row is None or row.organization_id != organization.pk or row.status not in from_statuses:
        return False
    if created <= row.event_created:
        return False
    row.status = to_status
    row.event_created = created
    row.event_id = event_id
    row.save(update_fields=["status", "event_created", "event_id", "updated_at"])
    _organization_follow(organization, row)
    return True


# --- Checkout ---------------------------------------------------------------------------------------


def _checkout_completed(
    organization: Organization,
    session: dict[str, Any],
    fetched: dict[str, dict[str, Any]],
    *,
    event_id: str,
    created: dt.datetime,
) -> StripeEvent.Outcome:
    """The subscription events carry the state; this one only matters when it arrives first."""
    reference = str(session.get("client_reference_id") or "")
    if reference and reference != str(organization.pk):
        logger.warning(
            "checkout session %s names organization %s, its customer is %s",
            session.get("id"),
            reference,
            organization.pk,
        )
        return StripeEvent.Outcome.IGNORED
    subscription_id = _id_of(session.get("subscription"))
    if session.get("mode") != "subscription" or not subscription_id:
        return StripeEvent.Outcome.IGNORED
    if StripeSubscription.objects.filter(subscription_id=subscription_id).exists():
        return StripeEvent.Outcome.APPLIED
    sub = _stripe_state(fetched, subscription_id)
    if _id_of(sub.get("customer")) != _id_of(session.get("customer")):
        return StripeEvent.Outcome.IGNORED
    row = _subscription_store(organization, None, sub, event_id=event_id, created=created)
    _organization_follow(organization, row)
    return StripeEvent.Outcome.APPLIED
