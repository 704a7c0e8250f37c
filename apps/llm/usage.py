"""Reads of an organization's usage over time, for the portal's dashboard: from the public hour and
day buckets (UsageBucket, filled by usage_fold off the request path), never from the ledger.

One range is one statement over one index: its series (the hours' or days' total rows) and its
breakdown by model, API key and user (their rows added up), whatever the ledger's size.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar

from django.db import connection
from django.utils import timezone

from apps.llm.platform.models import LATENCY_SLOT_FLOORS_MS, LATENCY_SLOTS, TOTAL_SPANS, UsageBucket, UsageSpan
from apps.tenants.models import Organization


@dataclass(frozen=True)
class UsageRange:
    key: str
    label: str
    span: str  # UsageSpan: hours for short ranges, days for long ones
    count: int  # how many spans, the current one included

    @property
    def step(self) -> dt.timedelta:
        return dt.timedelta(hours=1) if self.span == UsageSpan.HOUR else dt.timedelta(days=1)


# The ranges the dashboard offers (and the only ones it reads: every read is bounded).
USAGE_RANGES: dict[str, UsageRange] = {
    found.key: found
    for found in (
        UsageRange("24h", "Last 24 hours", UsageSpan.HOUR, 24),
        UsageRange("7d", "Last 7 days", UsageSpan.HOUR, 7 * 24),
        UsageRange("30d", "Last 30 days", UsageSpan.DAY, 30),
        UsageRange("90d", "Last 90 days", UsageSpan.DAY, 90),
    )
}
DEFAULT_USAGE_RANGE = "7d"


def latency_percentile(histogram: list[int], fraction: float) -> float | None:
    """The latency (ms) below which `fraction` of the histogram's requests fall, interpolated in its
    slot (None without any). The last slot has no end: its floor is given, an underestimate."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = fraction * total
    seen = 0
    for slot, count in enumerate(histogram):
        if count and seen + count >= rank:
            floor = LATENCY_SLOT_FLOORS_MS[slot]
            if slot + 1 == LATENCY_SLOTS:
                return float(floor)
            ceiling = LATENCY_SLOT_FLOORS_MS[slot + 1]
            return floor + (ceiling - floor) * (rank - seen) / count
        seen += count
    return float(LATENCY_SLOT_FLOORS_MS[-1])


@dataclass
class UsageTotals:
    requests: int = 0
    cache_hits: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    saved_usd: Decimal = Decimal(0)
    latency_histogram: list[int] = field(default_factory=lambda: [0] * LATENCY_SLOTS)

    def add(self, other: UsageTotals) -> None:
        self.requests += other.requests
        self.cache_hits += other.cache_hits
        self.errors += other.errors
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        self.saved_usd += other.saved_usd
        self.latency_histogram = [a + b for a, b in zip(self.latency_histogram, other.latency_histogram, strict=True)]

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cache_hit_rate(self) -> float | None:
        """Cache hits among answered requests (None: none answered)."""
        return self.cache_hits / self.requests if self.requests else None

    @property
    def p50_ms(self) -> float | None:
        return latency_percentile(self.latency_histogram, 0.50)

    @property
    def p95_ms(self) -> float | None:
        return latency_percentile(self.latency_histogram, 0.95)


@dataclass
class UsagePoint:
    start: dt.datetime
    totals: UsageTotals


@dataclass
class UsageSeries:
    """A range of an organization's usage: every hour or day in it (zeros where nothing happened),
    the whole range's totals, and the range by model, by API key id and by user id (0: none), each
    ordered by cost, then requests."""

    range: UsageRange
    start: dt.datetime
    end: dt.datetime
    points: list[UsagePoint]
    total: UsageTotals
    by_model: list[tuple[str, UsageTotals]]
    by_key: list[tuple[int, UsageTotals]]
    by_user: list[tuple[int, UsageTotals]]


def usage_range_bounds(usage_range: UsageRange, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the range in UTC: whole hours or days, the current one last."""
    now = now.astimezone(dt.UTC)
    if usage_range.span == UsageSpan.HOUR:
        end = now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    else:
        end = now.replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
    return end - usage_range.step * usage_range.count, end


# The range's series is its total rows (one per hour or day); its breakdown adds up the detailed
# rows by model, key and user, a histogram slot by slot (written out: no unnest, one pass).
_SERIES = """
SELECT true AS by_time, start, '' AS model_name, 0 AS api_key_id, 0 AS user_id, requests, cache_hits, errors,
    input_tokens, output_tokens, cost_usd, saved_usd, latency_histogram
FROM public.{table}
WHERE organization_id = %(organization)s AND span = %(total_span)s AND start >= %(start)s AND start < %(end)s
UNION ALL
SELECT false, NULL, model_name, api_key_id, user_id, sum(requests), sum(cache_hits), sum(errors), sum(input_tokens),
    sum(output_tokens), sum(cost_usd), sum(saved_usd), ARRAY[{slot_sums}]::bigint[]
FROM public.{table}
WHERE organization_id = %(organization)s AND span = %(span)s AND start >= %(start)s AND start < %(end)s
GROUP BY model_name, api_key_id, user_id
""".format(
    slot_sums=", ".join(f"sum(latency_histogram[{n}])" for n in range(1, LATENCY_SLOTS + 1)),
    table=UsageBucket._meta.db_table,
)


Name = TypeVar("Name", str, int)


def _by(totals: dict[Name, UsageTotals]) -> list[tuple[Name, UsageTotals]]:
    return sorted(totals.items(), key=lambda item: (-item[1].cost_usd, -item[1].requests, str(item[0])))


def usage_series(*, organization: Organization, range_key: str, now: dt.datetime | None = None) -> UsageSeries:
    """The organization's usage over one of USAGE_RANGES (KeyError for another): one query."""
    usage_range = USAGE_RANGES[range_key]
    start, end = usage_range_bounds(usage_range, now or timezone.now())
    points = {start + usage_range.step * n: UsageTotals() for n in range(usage_range.count)}
    models: dict[str, UsageTotals] = {}
    keys: dict[int, UsageTotals] = {}
    users: dict[int, UsageTotals] = {}
    total = UsageTotals()
    with connection.cursor() as cursor:
        cursor.execute(
            _SERIES,
            {
                "organization": organization.pk,
                "span": usage_range.span,
                "total_span": TOTAL_SPANS[UsageSpan(usage_range.span)],
                "start": start,
                "end": end,
            },
        )
        rows = cursor.fetchall()
    for by_time, at, model_name, key_id, user_id, *numbers in rows:
        requests, hits, errors, tokens_in, tokens_out, cost, saved, histogram = numbers
        totals = UsageTotals(
            requests=int(requests),
            cache_hits=int(hits),
            errors=int(errors),
            input_tokens=int(tokens_in),
            output_tokens=int(tokens_out),
            cost_usd=cost,
            saved_usd=saved,
            latency_histogram=[int(count) for count in histogram],
        )
        if by_time:
            points[at.astimezone(dt.UTC)] = totals
            continue
        total.add(totals)
        models.setdefault(model_name, UsageTotals()).add(totals)
        keys.setdefault(int(key_id), UsageTotals()).add(totals)
        users.setdefault(int(user_id), UsageTotals()).add(totals)
    return UsageSeries(
        range=usage_range,
        start=start,
        end=end,
        points=[UsagePoint(start=at, totals=totals) for at, totals in sorted(points.items())],
        total=total,
        by_model=_by(models),
        by_key=_by(keys),
        by_user=_by(users),
    )


def usage_recorded(*, organization: Organization) -> bool:
    """Whether the organization has any usage folded at all (a new organization has none)."""
    return UsageBucket.objects.filter(organization=organization).exists()
