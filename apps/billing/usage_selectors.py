"""An organization's usage in its billing period, against what its plan includes: what the portal's
Plan and billing page shows. Read from the public daily rollups (apps.llm's UsageRollup, one indexed
query per period), never from the ledger, so the page costs the same whatever the organization's
volume.

The projection is linear: what was used so far, divided by the share of the period that has passed,
is what the whole period would use at the same pace. It says nothing until a little of the period
has passed (an hour's usage stretched over a month says more about the hour than the month).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import F, Sum
from django.utils import timezone

from apps.billing.models import BillingCredit
from apps.llm.platform.models import UsageRollup
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


def period_usage(
    *, organization: Organization, period: BillingPeriod, included_usd: Decimal, now: dt.datetime | None = None
) -> PeriodUsage:
    """The organization's usage in `period` by UTC day, from the daily rollups: one query over the
    rollups' (organization, day, ...) unique index. A period that starts mid-day counts that day
    whole (the rollups' grain is a day)."""
    now = now or timezone.now()
    first, last = period.days[0], period.days[-1]
    rows = (
        UsageRollup.objects.filter(organization=organization, day__gte=first, day__lte=last)
        .values("day")
        .annotate(cost=Sum("cost_usd"), calls=Sum("requests"), tokens_in=Sum("input_tokens"), out=Sum("output_tokens"))
    )
    found = {row["day"]: row for row in rows}
    days = []
    for day in period.days:
        row = found.get(day)
        days.append(
            UsageDay(
                day=day,
                cost_usd=row["cost"] if row else Decimal(0),
                requests=int(row["calls"]) if row else 0,
                tokens=int(row["tokens_in"] + row["out"]) if row else 0,
            )
        )
    return PeriodUsage(period=period, now=now, included_usd=included_usd, days=days)


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
