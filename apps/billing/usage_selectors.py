"""An organization's usage in its billing period, against what its plan includes: what the portal's
Plan and billing page shows. Read from the public rollups (apps.llm's daily UsageRollup, and the
hourly totals of UsageBucket for a day the period starts or ends inside; two indexed queries at
most), never from the ledger, so the page costs the same whatever the organization's volume.

The projection is linear: what was used so far, divided by the share of the period that has passed,
is what the whole period would use at the same pace. It says nothing until a little of the period
has passed (an hour's usage stretched over a month says more about the hour than the month).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db.models import F, Q, Sum
from django.utils import timezone

from apps.billing.models import BillingCredit
from apps.llm.platform.models import UsageBucket, UsageRollup, UsageSpan
from apps.tenants.models import Organization

CENT = Decimal("0.01")
# Below this share of the period a projection is not made (about 7 hours of a 30-day month).
PROJECTION_MIN_ELAPSED = Decimal("0.01")


@dataclass(frozen=True)
class BillingPeriod:
    """[start, end) in UTC."""

    start: dt.datetime
    end: dt.datetime

    @property
    def days(self) -> list[dt.date]:
        first, last = self.start.date(), (self.end - dt.timedelta(microseconds=1)).date()
        return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]

    def elapsed(self, now: dt.datetime) -> Decimal:
        """The share of the period that has passed at `now`, 0 to 1."""
        whole = (self.end - self.start).total_seconds()
        done = (min(max(now, self.start), self.end) - self.start).total_seconds()
        return Decimal(done / whole).quantize(Decimal("0.000001")) if whole > 0 else Decimal(1)


def calendar_month(now: dt.datetime) -> BillingPeriod:
    """The UTC calendar month of `now`: the period of an organization without a subscription."""
    now = now.astimezone(dt.UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + dt.timedelta(days=32)).replace(day=1)
    return BillingPeriod(start, end)


@dataclass(frozen=True)
class UsageDay:
    day: dt.date
    cost_usd: Decimal
    requests: int
    tokens: int


@dataclass
class PeriodUsage:
    """The period's usage, day by day (every day of the period, zeros where nothing was used and
    for the days still to come), with its totals so far and the linear projection to its end."""

    period: BillingPeriod
    now: dt.datetime
    included_usd: Decimal
    days: list[UsageDay] = field(default_factory=list)

    @property
    def used_usd(self) -> Decimal:
        return sum((d.cost_usd for d in self.days), Decimal(0))

    @property
    def requests(self) -> int:
        return sum(d.requests for d in self.days)

    @property
    def tokens(self) -> int:
        return sum(d.tokens for d in self.days)

    @property
    def elapsed(self) -> Decimal:
        return self.period.elapsed(self.now)

    @property
    def used_percent(self) -> int:
        """How much of the included usage is used, 0 to 100 (100 when nothing is included and
        something was used)."""
        if self.included_usd <= 0:
            return 100 if self.used_usd > 0 else 0
        # Rounded, not truncated: $4.999999 of $5.00 is shown as $5.00, so not as 99%.
        share = (self.used_usd * 100 / self.included_usd).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        return int(min(Decimal(100), share))

    @property
    def exhausted(self) -> bool:
        """What is included is used, to the cent (the rollups lag the ledger by up to a minute)."""
        return self.included_usd - self.used_usd < CENT / 2

    @property
    def projected_usd(self) -> Decimal | None:
        """Usage at the period's end at the pace so far (None: too early in the period to say)."""
        elapsed = self.elapsed
        if elapsed < PROJECTION_MIN_ELAPSED:
            return None
        return (self.used_usd / elapsed).quantize(Decimal("0.00000001"))

    @property
    def over_included_usd(self) -> Decimal:
        """Usage past what the plan includes, so far."""
        return max(Decimal(0), self.used_usd - self.included_usd)

    @property
    def projected_over_usd(self) -> Decimal | None:
        """Usage past what the plan includes, projected to the period's end."""
        projected = self.projected_usd
        return None if projected is None else max(Decimal(0), projected - self.included_usd)


def _midnight(moment: dt.datetime) -> bool:
    return moment.astimezone(dt.UTC).time() == dt.time()


def period_usage(
    *, organization: Organization, period: BillingPeriod, included_usd: Decimal, now: dt.datetime | None = None
) -> PeriodUsage:
    """The organization's usage in `period` by UTC day: whole days from the daily rollups (one query
    over their (organization, day, ...) unique index), and a first or last day the period starts
    or ends inside (a subscription's period starts when it was bought) from the hourly totals (one
    more query, from the hour the period starts in), so usage before an upgrade is not counted
    against the new plan."""
    now = now or timezone.now()
    days = period.days
    first, last = days[0], days[-1]
    partial: dict[dt.date, tuple[dt.datetime, dt.datetime]] = {}
    if not _midnight(period.start):
        start = period.start.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        partial[first] = (start, dt.datetime.combine(first + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC))
    if not _midnight(period.end):
        lo = dt.datetime.combine(last, dt.time(), tzinfo=dt.UTC)
        partial[last] = (max(lo, partial.get(last, (lo, lo))[0]), period.end)
    found: dict[dt.date, dict[str, Any]] = {}
    whole = [day for day in days if day not in partial]
    if whole:
        rows = (
            UsageRollup.objects.filter(organization=organization, day__gte=whole[0], day__lte=whole[-1])
            .values("day")
            .annotate(
                cost=Sum("cost_usd"), calls=Sum("requests"), tokens_in=Sum("input_tokens"), out=Sum("output_tokens")
            )
        )
        found.update({row["day"]: row for row in rows})
    if partial:
        within = Q()
        for lo, hi in partial.values():
            within |= Q(start__gte=lo, start__lt=hi)
        hours = UsageBucket.objects.filter(within, organization=organization, span=UsageSpan.HOUR_TOTAL).values_list(
            "start", "cost_usd", "requests", "input_tokens", "output_tokens"
        )
        for start, cost, calls, tokens_in, out in hours:
            row = found.setdefault(
                start.astimezone(dt.UTC).date(), {"cost": Decimal(0), "calls": 0, "tokens_in": 0, "out": 0}
            )
            row["cost"] += cost
            row["calls"] += calls
            row["tokens_in"] += tokens_in
            row["out"] += out
    usage_days = []
    for day in days:
        totals = found.get(day)
        usage_days.append(
            UsageDay(
                day=day,
                cost_usd=totals["cost"] if totals else Decimal(0),
                requests=int(totals["calls"]) if totals else 0,
                tokens=int(totals["tokens_in"] + totals["out"]) if totals else 0,
            )
        )
    return PeriodUsage(period=period, now=now, included_usd=included_usd, days=usage_days)


def cents(amount: Decimal) -> Decimal:
    """An amount charged, rounded to the cent as an invoice is."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def credit_balance_usd(*, organization: Organization, now: dt.datetime | None = None) -> Decimal:
    """What the organization's unexpired credits have left to pay overage with."""
    now = now or timezone.now()
    left = (
        BillingCredit.objects.filter(organization=organization)
        .exclude(expires_at__lte=now)
        .aggregate(left=Sum(F("amount_usd") - F("applied_usd")))["left"]
    )
    return left or Decimal(0)
