"""Usage-based billing: the ledger feeds Stripe Billing Meters, and a reconciliation says whether
the ledger, what was sent and what Stripe counted agree.

Which rows bill. A settled ledger row (apps.llm UsageAttempt, not `reserved`) bills when the
platform paid for it (`paid_by = 'platform'`; calls on the organization's own provider key are
not ours to bill), it cost something, and at its time (settled_at) the organization was on a plan
version that bills usage (`overage_allowed` with a `stripe_meter_event_name`: the
OrganizationPlanPeriod that covers that moment says which). The included usage is Stripe's to
subtract (the usage price's first tier); the meter gets every billable row.

The unit. One meter unit is one micro-cent, 1e-8 USD: the ledger's own precision (cost_usd has 8
decimal places), so each row's value is an exact integer and the meter's total equals the
ledger's to the last digit, with no per-row rounding to drift on a million small calls. The usage
price is then set per micro-cent (`unit_amount_decimal` "0.000001" cents at list price).

Exactly once. A push reads unsent rows (`metered_at IS NULL`, a small partial index) in id order,
sends one meter event per row with the row's identity as `identifier`
(`<organization id>:<request_id>:<attempt>`, unique in the ledger), and only after Stripe has
accepted them marks those rows, in one transaction per batch. A row Stripe refused, or a batch
Stripe never answered, stays unmarked and is sent again by a later push; a push killed between
Stripe's answer and the marking sends those rows again, and Stripe drops the repeats by identifier
(it keeps identifiers at least 24 hours; the beat pushes every minute). Rows that bill nothing
(own key, zero cost, no metered plan at their time) are marked in the same transaction without an
event. One push per organization at a time (a session advisory lock, released by PostgreSQL when
a killed process's connection closes).

Outages. Stripe errors are retried by the SDK (a few attempts with backoff, the same idempotency
key); a batch that still fails ends the push and sets a backoff for the organization (doubling up
to 15 minutes) kept in the cache; the rows wait in the ledger, so an outage delays metering and
loses nothing.

Event timestamps. Stripe takes events up to 35 days old: a row older than that (a backlog left
more than a month) is sent with the oldest timestamp Stripe accepts, so it is billed late rather
than never; the reconciliation of its month then shows it as sent but not counted by Stripe.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from apps.billing import stripe_gateway
from apps.billing.models import OrganizationPlanPeriod
from apps.billing.stripe_gateway import MeterEvent, StripeRequestError, StripeUnavailable
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization

logger = logging.getLogger(__name__)

UNITS_PER_USD = 10**8  # one meter unit = one micro-cent (1e-8 USD), the ledger's precision
BATCH = 1000  # rows read, sent and marked together
MAX_ROWS_PER_PUSH = 200_000  # a push ends after this many rows; the next beat goes on
STRIPE_OLDEST = dt.timedelta(days=35) - dt.timedelta(hours=1)  # Stripe refuses older timestamps
BACKOFF_FIRST = dt.timedelta(seconds=30)
BACKOFF_MOST = dt.timedelta(minutes=15)
# First key of the push's advisory lock (the second is the organization's id).
_LOCK_KEY = 0x6D657465  # "mete"


@dataclass
class MeterSendOutcome:
    """What Stripe said about a batch: identifiers it accepted (a duplicate it dropped counts as
    accepted: the event is there), and the others with the error. `unavailable`: Stripe itself
    failed (5xx, timeouts, rate limits) rather than refusing an event; the push stops and backs off."""

    accepted: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    unavailable: bool = False


MeterSender = Callable[[Sequence[MeterEvent]], MeterSendOutcome]
# (event_name, customer, start, end) -> the meter's total for that customer in [start, end)
MeterSummary = Callable[[str, str, dt.datetime, dt.datetime], int]


@dataclass(frozen=True)
class MeteredSpan:
    """A stretch of time when the organization's plan version billed usage, on this meter."""

    starts_at: dt.datetime
    ends_at: dt.datetime | None
    event_name: str

    def covers(self, at: dt.datetime) -> bool:
        return self.starts_at <= at and (self.ends_at is None or at < self.ends_at)


@dataclass(frozen=True)
class MeterTarget:
    organization: Organization
    customer: str
    spans: tuple[MeteredSpan, ...]

    def event_name_at(self, at: dt.datetime) -> str | None:
        for span in self.spans:
            if span.covers(at):
                return span.event_name
        return None


@dataclass
class PushReport:
    sent: int = 0  # events Stripe accepted
    marked: int = 0  # ledger rows marked (sent, or billing nothing)
    failed: int = 0  # events refused or unanswered: left for a later push
    unavailable: bool = False
    skipped: str = ""  # why nothing was tried ("no target", "busy", "backing off")


# --- who is metered ----------------------------------------------------------------------------


def metered_spans(*, organization_id: int) -> tuple[MeteredSpan, ...]:
    """The organization's plan periods whose version bills usage on a meter, oldest first."""
    rows = (
        OrganizationPlanPeriod.objects.filter(organization_id=organization_id, plan_version__overage_allowed=True)
        .exclude(plan_version__stripe_meter_event_name="")
        .order_by("starts_at")
        .values_list("starts_at", "ends_at", "plan_version__stripe_meter_event_name")
    )
    return tuple(MeteredSpan(starts_at=s, ends_at=e, event_name=name) for s, e, name in rows)


def stripe_customer_id(*, organization: Organization) -> str:
    """The organization's Stripe customer id (dj-stripe's Customer whose subscriber it is, in the
    mode the platform runs in), or "" when it has none."""
    from djstripe.models import Customer

    found = (
        Customer.objects.filter(subscriber_id=organization.pk, livemode=settings.STRIPE_LIVE_MODE)
        .order_by("-created", "-djstripe_id")
        .values_list("id", flat=True)
        .first()
    )
    return str(found or "")


def metering_target(*, organization: Organization) -> MeterTarget | None:
    """What a push needs for this organization, or None when it has nothing to meter: no Stripe
    customer, or no plan period that billed usage."""
    spans = metered_spans(organization_id=organization.pk)
    if not spans:
        return None
    customer = stripe_customer_id(organization=organization)
    if not customer:
        return None
    return MeterTarget(organization=organization, customer=customer, spans=spans)


def metering_organization_ids(*, now: dt.datetime | None = None) -> list[int]:
    """Organizations a push may have work for: on a plan that bills usage now, or until recently
    (rows of the last metered weeks may still be unsent). The push checks the customer itself."""
    since = (now or timezone.now()) - STRIPE_OLDEST
    ids = (
        OrganizationPlanPeriod.objects.filter(plan_version__overage_allowed=True)
        .exclude(plan_version__stripe_meter_event_name="")
        .exclude(ends_at__lt=since)
        .exclude(organization__status=Organization.Status.DELETING)
        .values_list("organization_id", flat=True)
        .distinct()
    )
    return sorted(ids)


# --- sending (through apps.billing.stripe_gateway) ----------------------------------------------

SEND_CONCURRENCY = 4  # meter event stream requests in flight at once, per push
STREAM_BATCH = stripe_gateway.METER_STREAM_BATCH  # events per stream request (Stripe's limit, 100)


def _send_chunk(events: Sequence[MeterEvent]) -> MeterSendOutcome:
    """One gateway call (stream requests of up to 100 events). Refused (4xx), its events go one by one
    on v1 to tell the refused event from the good ones; a v1 repeat Stripe already has counts once."""
    outcome = MeterSendOutcome()
    try:
        stripe_gateway.meter_events_stream(events)
    except StripeUnavailable as exc:
        outcome.failed.update((event.identifier, str(exc)) for event in events)
        outcome.unavailable = True
        return outcome
    except StripeRequestError:
        for event in events:
            try:
                stripe_gateway.meter_event_create(event)
            except StripeUnavailable as exc:
                outcome.failed[event.identifier] = str(exc)
                outcome.unavailable = True
            except StripeRequestError as exc:
                outcome.failed[event.identifier] = str(exc)
            else:
                outcome.accepted.add(event.identifier)
        return outcome
    outcome.accepted.update(event.identifier for event in events)
    return outcome


def meter_events_send(events: Sequence[MeterEvent]) -> MeterSendOutcome:
    """Send a batch as stream requests of up to 100 events, a few at once; say which were accepted.

    The batch is cut into SEND_CONCURRENCY slices of whole hundreds, each sent in one gateway call
    (one meter event session, then its stream requests in turn): fewer session requests than one
    per hundred. A slice that fails part-way counts as not accepted as a whole; its events that did
    reach Stripe are sent again by a later push and dropped there by identifier."""
    per_slice = max(1, -(-len(events) // (SEND_CONCURRENCY * STREAM_BATCH))) * STREAM_BATCH
    chunks = [events[i : i + per_slice] for i in range(0, len(events), per_slice)]
    outcome = MeterSendOutcome()
    if not chunks:
        return outcome
    with ThreadPoolExecutor(max_workers=min(SEND_CONCURRENCY, len(chunks))) as pool:
        for part in pool.map(_send_chunk, chunks):
            outcome.accepted |= part.accepted
            outcome.failed.update(part.failed)
            outcome.unavailable = outcome.unavailable or part.unavailable
    return outcome


def meter_summary_total(event_name: str, customer: str, start: dt.datetime, end: dt.datetime) -> int:
    """What Stripe's meter for `event_name` counts for the customer in [start, end)."""
    meter_id = stripe_gateway.meter_id_for(event_name)
    if meter_id is None:
        return 0
    total = stripe_gateway.meter_event_summary(
        meter_id=meter_id, customer_id=customer, start=int(start.timestamp()), end=int(end.timestamp())
    )
    return round(total)


# --- the push ----------------------------------------------------------------------------------


def row_identifier(*, organization_id: int, request_id: str, attempt: int) -> str:
    """The meter event's identifier: the ledger row's identity (unique per organization's ledger)."""
    return f"{organization_id}:{request_id}:{attempt}"


def usd_to_units(amount: Decimal) -> int:
    return int(amount * UNITS_PER_USD)


def _backoff_key(organization_id: int) -> str:
    # Our own key carries the organization: the tenant key function may not be in play in a task.
    return f"billing:meters:backoff:{organization_id}"


# The ledger's table (apps.llm UsageAttempt), named as in budgets.py's statements.
_UNSENT = """
SELECT id, request_id, attempt, cost_usd, paid_by, coalesce(settled_at, created_at)
FROM llm_usageattempt
WHERE metered_at IS NULL AND status <> 'reserved' AND id > %s
ORDER BY id LIMIT %s
"""
_MARK = "UPDATE llm_usageattempt SET metered_at = %s WHERE id = ANY(%s) AND metered_at IS NULL"


def _lock(organization_id: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_LOCK_KEY, organization_id])
        return bool(cursor.fetchone()[0])


def _unlock(organization_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_LOCK_KEY, organization_id])


def _batch(
    rows: Sequence[tuple[Any, ...]], *, target: MeterTarget, oldest_allowed: dt.datetime
) -> tuple[dict[str, int], list[MeterEvent], list[int]]:
    """A batch of ledger rows as meter events ({identifier: row id}, the events) and the ids of rows
    that bill nothing (own key, no cost, no metered plan at their time)."""
    organization_id = target.organization.pk
    events: dict[str, int] = {}
    payload: list[MeterEvent] = []
    nothing_to_bill: list[int] = []
    for row_id, request_id, attempt, cost, paid_by, at in rows:
        event_name = target.event_name_at(at)
        value = usd_to_units(cost)
        if paid_by != "platform" or value <= 0 or event_name is None:
            nothing_to_bill.append(row_id)
            continue
        identifier = row_identifier(organization_id=organization_id, request_id=request_id, attempt=attempt)
        events[identifier] = row_id
        payload.append(
            MeterEvent(
                identifier=identifier,
                event_name=event_name,
                customer_id=target.customer,
                value=value,
                timestamp=int(max(at, oldest_allowed).timestamp()),
            )
        )
    return events, payload, nothing_to_bill


def meters_push(
    *,
    organization: Organization,
    send: MeterSender | None = None,
    target: MeterTarget | None = None,
    batch: int = BATCH,
    max_rows: int = MAX_ROWS_PER_PUSH,
    ignore_backoff: bool = False,
    now: Callable[[], dt.datetime] = timezone.now,
) -> PushReport:
    """Send the organization's unsent settled ledger rows to its Stripe meter, `batch` at a time,
    marking each batch's rows in one transaction once Stripe has answered. Safe to run at any time,
    twice at once (the second does nothing), and to kill at any point (see the module's text)."""
    report = PushReport()
    target = target or metering_target(organization=organization)
    if target is None:
        report.skipped = "no target"
        return report
    if not ignore_backoff:
        backoff = cache.get(_backoff_key(organization.pk))
        if backoff is not None and backoff["until"] > time.time():
            report.skipped = "backing off"
            return report
    send = send or meter_events_send
    oldest_allowed = now() - STRIPE_OLDEST
    with organization_schema(organization):
        if not _lock(organization.pk):
            report.skipped = "busy"
            return report
        try:
            after = 0
            while report.marked + report.failed < max_rows:
                with connection.cursor() as cursor:
                    cursor.execute(_UNSENT, [after, batch])
                    rows = cursor.fetchall()
                if not rows:
                    break
                after = rows[-1][0]
                events, payload, nothing_to_bill = _batch(rows, target=target, oldest_allowed=oldest_allowed)
                outcome = send(payload) if payload else MeterSendOutcome()
                accepted = [events[identifier] for identifier in outcome.accepted if identifier in events]
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(_MARK, [now(), accepted + nothing_to_bill])
                    report.marked += cursor.rowcount
                report.sent += len(accepted)
                report.failed += len(payload) - len(accepted)
                if outcome.failed:
                    first = next(iter(outcome.failed.items()))
                    logger.warning(
                        "meter push %s: %d of %d events not accepted (%s: %s)",
                        organization.slug,
                        len(payload) - len(accepted),
                        len(payload),
                        *first,
                    )
                if outcome.unavailable:
                    report.unavailable = True
                    break
        finally:
            _unlock(organization.pk)
    _backoff_update(organization.pk, failed=report.unavailable)
    return report


def _backoff_update(organization_id: int, *, failed: bool) -> None:
    key = _backoff_key(organization_id)
    if not failed:
        cache.delete(key)
        return
    previous = cache.get(key) or {"failures": 0}
    failures = int(previous["failures"]) + 1
    delay = min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MOST)
    cache.set(key, {"failures": failures, "until": time.time() + delay.total_seconds()}, timeout=3600)


# --- reconciliation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reconciliation:
    organization: str
    period: str
    customer: str
    ledger_rows: int  # billable rows settled in the period
    ledger_units: int
    sent_rows: int  # of those, accepted by Stripe
    sent_units: int
    stripe_units: int  # what Stripe's meter summaries count for the customer in the period

    @property
    def unsent_units(self) -> int:
        """Billable but not yet sent (a push will send it): zero once the backlog is drained."""
        return self.ledger_units - self.sent_units

    @property
    def stripe_difference(self) -> int:
        """What Stripe counts minus what was sent: lost (negative) or counted twice (positive)."""
        return self.stripe_units - self.sent_units

    @property
    def difference(self) -> int:
        """Stripe's count minus the ledger's: zero when all is well."""
        return self.stripe_units - self.ledger_units

    def as_dict(self) -> dict[str, Any]:
        return {
            "organization": self.organization,
            "period": self.period,
            "customer": self.customer,
            "unit": "micro-cent (1e-8 USD)",
            "ledger_rows": self.ledger_rows,
            "ledger_units": self.ledger_units,
            "sent_rows": self.sent_rows,
            "sent_units": self.sent_units,
            "stripe_units": self.stripe_units,
            "unsent_units": self.unsent_units,
            "stripe_minus_sent": self.stripe_difference,
            "difference": self.difference,
        }


def period_bounds(period: str) -> tuple[dt.datetime, dt.datetime]:
    """'YYYY-MM' -> [first instant, first instant of the next month) in UTC."""
    try:
        year, month = (int(part) for part in period.split("-"))
        start = dt.datetime(year, month, 1, tzinfo=dt.UTC)
    except ValueError as exc:
        raise ValueError(f"period must be YYYY-MM, not {period!r}") from exc
    end = dt.datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=dt.UTC)
    return start, end


_LEDGER = """
SELECT count(*), coalesce(sum(u.cost_usd), 0), count(*) FILTER (WHERE u.metered_at IS NOT NULL),
    coalesce(sum(u.cost_usd) FILTER (WHERE u.metered_at IS NOT NULL), 0)
FROM llm_usageattempt u
WHERE u.status <> 'reserved' AND u.paid_by = 'platform' AND u.cost_usd > 0
    AND coalesce(u.settled_at, u.created_at) >= %(start)s AND coalesce(u.settled_at, u.created_at) < %(end)s
    AND EXISTS (
        SELECT 1 FROM unnest(%(starts)s::timestamptz[], %(ends)s::timestamptz[]) AS p(s, e)
        WHERE coalesce(u.settled_at, u.created_at) >= p.s
            AND (p.e IS NULL OR coalesce(u.settled_at, u.created_at) < p.e)
    )
"""


def meters_reconcile(*, organization: Organization, period: str, summary: MeterSummary | None = None) -> Reconciliation:
    """The organization's billable usage in `period` (YYYY-MM, UTC) three ways: in the ledger, sent
    to Stripe (marked), and counted by Stripe's meter summaries for its customer."""
    start, end = period_bounds(period)
    spans = metered_spans(organization_id=organization.pk)
    customer = stripe_customer_id(organization=organization) if spans else ""
    with organization_schema(organization), connection.cursor() as cursor:
        cursor.execute(
            _LEDGER,
            {
                "start": start,
                "end": end,
                "starts": [span.starts_at for span in spans],
                "ends": [span.ends_at for span in spans],
            },
        )
        ledger_rows, ledger_usd, sent_rows, sent_usd = cursor.fetchone()
    stripe_units = 0
    if customer:
        summary = summary or meter_summary_total
        for event_name in sorted({span.event_name for span in spans}):
            stripe_units += summary(event_name, customer, start, end)
    return Reconciliation(
        organization=organization.slug,
        period=period,
        customer=customer,
        ledger_rows=int(ledger_rows),
        ledger_units=usd_to_units(Decimal(ledger_usd)),
        sent_rows=int(sent_rows),
        sent_units=usd_to_units(Decimal(sent_usd)),
        stripe_units=stripe_units,
    )
