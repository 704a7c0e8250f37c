"""What the dashboard shows: a range of usage from the LLM engine's rollups (apps.llm.calls), the
API keys and people it names, and the budgets with their current spend. A constant number of
queries whatever the usage: one for the range, one for key names, one for people, two for budgets.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from apps.accounts.models import User
from apps.apikeys.selectors import apikey_list
from apps.llm.calls import USAGE_RANGES, BudgetStatus, UsageSeries, UsageTotals, budget_statuses, usage_series
from apps.tenants.models import Organization

# Rows of each breakdown on the page; the rest is one "other" row (the CSV has every row).
BREAKDOWN_ROWS = 25
BREAKDOWNS = ("time", "model", "key", "user")
NO_KEY_LABEL = "No key (portal, jobs, workflows)"
NO_USER_LABEL = "No person (API keys)"


@dataclass(frozen=True)
class UsageRow:
    label: str
    totals: UsageTotals
    detail: str = ""  # e.g. "revoked", shown beside the label
    start: dt.datetime | None = None  # rows by time: the hour's or day's start


@dataclass(frozen=True)
class BudgetGauge:
    title: str
    period: str
    status: BudgetStatus
    soft_at_usd: Decimal | None

    @property
    def committed_usd(self) -> Decimal:
        return self.status.spent_usd + self.status.reserved_usd

    @property
    def state(self) -> str:
        """ok, soft (past the soft limit) or limit (at or past the limit)."""
        limit = self.status.budget.limit_usd
        if self.committed_usd >= limit:
            return "limit"
        if self.soft_at_usd is not None and self.committed_usd >= self.soft_at_usd:
            return "soft"
        return "ok"

    def meter(self) -> dict[str, str]:
        """<meter> bounds: the optimum below the soft limit, "high" from the soft limit (or 80%) up
        to the limit; the value is spent plus reserved (a browser shows it full past the limit)."""
        limit = self.status.budget.limit_usd
        if not limit:
            return {"max": "1", "low": "0", "high": "0", "value": "1"}
        soft = self.soft_at_usd if self.soft_at_usd is not None else limit * Decimal("0.8")
        return {
            "max": f"{limit:f}",
            "low": f"{soft:f}",
            "high": f"{limit * Decimal('0.999'):f}",
            "value": f"{self.committed_usd:f}",
        }

    @property
    def percent(self) -> float:
        limit = self.status.budget.limit_usd
        return float(self.committed_usd * 100 / limit) if limit else 100.0


@dataclass(frozen=True)
class Dashboard:
    series: UsageSeries
    models: list[UsageRow]
    keys: list[UsageRow]
    users: list[UsageRow]
    gauges: list[BudgetGauge]

    @property
    def empty(self) -> bool:
        total = self.series.total
        return not (total.requests or total.errors or total.cost_usd)

    def rows(self, by: str) -> list[UsageRow]:
        """A breakdown's rows (by time: every hour or day of the range, oldest first)."""
        if by == "time":
            span = self.series.range.span
            return [
                UsageRow(label=bucket_label(p.start, span), totals=p.totals, start=p.start) for p in self.series.points
            ]
        return {"model": self.models, "key": self.keys, "user": self.users}[by]

    @property
    def time_rows(self) -> list[UsageRow]:
        return self.rows("time")

    def shown(self, by: str) -> tuple[list[UsageRow], UsageRow | None]:
        """The breakdown's first BREAKDOWN_ROWS rows, and the rest added up (None when none)."""
        rows = self.rows(by)
        if len(rows) <= BREAKDOWN_ROWS:
            return rows, None
        other = UsageTotals()
        for row in rows[BREAKDOWN_ROWS:]:
            other.add(row.totals)
        return rows[:BREAKDOWN_ROWS], UsageRow(label=f"{len(rows) - BREAKDOWN_ROWS} more", totals=other)

    def chart_data(self) -> dict[str, Any]:
        """The series for the page's charts (static/portal/dashboard.js), as plain numbers."""
        points = self.series.points
        return {
            "span": self.series.range.span,
            "time": [int(p.start.timestamp()) for p in points],
            "cost": [float(p.totals.cost_usd) for p in points],
            "saved": [float(p.totals.saved_usd) for p in points],
            "requests": [p.totals.requests for p in points],
            "cache_hits": [p.totals.cache_hits for p in points],
            "errors": [p.totals.errors for p in points],
            "input_tokens": [p.totals.input_tokens for p in points],
            "output_tokens": [p.totals.output_tokens for p in points],
            "p50": [_rounded(p.totals.p50_ms) for p in points],
            "p95": [_rounded(p.totals.p95_ms) for p in points],
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def bucket_label(start: dt.datetime, span: str) -> str:
    return start.strftime("%Y-%m-%d %H:00") if span == "hour" else start.strftime("%Y-%m-%d")


def _numeric(status: BudgetStatus) -> bool:
    """Budgets name people and keys by id as text; anything else is shown as it is, never looked up."""
    return status.budget.scope_id.isascii() and status.budget.scope_id.isdigit()


def dashboard_read(*, organization: Organization, range_key: str, now: dt.datetime | None = None) -> Dashboard:
    """The organization's dashboard over one of USAGE_RANGES (KeyError for another). The connection
    is on the organization's schema (its budgets are there)."""
    series = usage_series(organization=organization, range_key=range_key, now=now)
    statuses = budget_statuses(now=now)
    key_ids = {key for key, _ in series.by_key if key} | {
        int(status.budget.scope_id) for status in statuses if status.budget.scope == "key" and _numeric(status)
    }
    user_ids = {user for user, _ in series.by_user if user} | {
        int(status.budget.scope_id) for status in statuses if status.budget.scope == "user" and _numeric(status)
    }
    keys: dict[int, tuple[str, bool]] = {}
    if key_ids:
        keys = {
            key_id: (name, revoked is not None)
            for key_id, name, revoked in apikey_list(organization=organization)
            .filter(pk__in=key_ids)
            .values_list("pk", "name", "revoked_at")
        }
    emails: dict[int, str] = {}
    if user_ids:
        emails = dict(User.objects.filter(pk__in=user_ids).values_list("pk", "email"))

    def key_row(key_id: int, totals: UsageTotals) -> UsageRow:
        if not key_id:
            return UsageRow(label=NO_KEY_LABEL, totals=totals)
        name, revoked = keys.get(key_id, (f"key #{key_id}", False))
        return UsageRow(label=name, totals=totals, detail="revoked" if revoked else "")

    def user_row(user_id: int, totals: UsageTotals) -> UsageRow:
        return UsageRow(label=emails.get(user_id, f"user #{user_id}") if user_id else NO_USER_LABEL, totals=totals)

    def title(status: BudgetStatus) -> str:
        budget = status.budget
        if budget.scope == "key":
            found = keys.get(int(budget.scope_id)) if _numeric(status) else None
            return f"API key {found[0] if found else '#' + budget.scope_id}"
        if budget.scope == "user":
            email = emails.get(int(budget.scope_id)) if _numeric(status) else None
            return email or f"user #{budget.scope_id}"
        return organization.name

    gauges = [
        BudgetGauge(
            title=title(status),
            period="today (UTC)" if status.budget.period == "day" else f"{status.period_start:%B %Y} (UTC)",
            status=status,
            soft_at_usd=(
                status.budget.limit_usd * status.budget.soft_percent / 100
                if status.budget.soft_percent is not None
                else None
            ),
        )
        for status in statuses
    ]
    return Dashboard(
        series=series,
        models=[UsageRow(label=name, totals=totals) for name, totals in series.by_model],
        keys=[key_row(key_id, totals) for key_id, totals in series.by_key],
        users=[user_row(user_id, totals) for user_id, totals in series.by_user],
        gauges=gauges,
    )


CSV_COLUMNS = (
    "requests",
    "errors",
    "cache_hits",
    "cache_hit_rate",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "saved_usd",
    "p50_latency_ms",
    "p95_latency_ms",
)


def csv_cell(value: str) -> str:
    """A label as a spreadsheet won't run it: a cell starting with = + - @ (or a tab or carriage
    return, which some spreadsheets skip first) gets a leading apostrophe (OWASP's CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def dashboard_csv(dashboard: Dashboard, by: str) -> str:
    """One breakdown of the range (every row) as CSV, with the range's bounds in each row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    first = {"time": f"{dashboard.series.range.span}_start_utc", "model": "model", "key": "api_key", "user": "user"}
    writer.writerow(["range_start_utc", "range_end_utc", first[by], *CSV_COLUMNS])
    bounds = [dashboard.series.start.isoformat(), dashboard.series.end.isoformat()]
    for row in dashboard.rows(by):
        totals = row.totals
        rate, p50, p95 = totals.cache_hit_rate, totals.p50_ms, totals.p95_ms
        writer.writerow(
            [
                *bounds,
                csv_cell(row.label),
                totals.requests,
                totals.errors,
                totals.cache_hits,
                "" if rate is None else f"{rate:.4f}",
                totals.input_tokens,
                totals.output_tokens,
                f"{totals.cost_usd:.8f}",
                f"{totals.saved_usd:.8f}",
                "" if p50 is None else f"{p50:.0f}",
                "" if p95 is None else f"{p95:.0f}",
            ]
        )
    return out.getvalue()


def range_choices() -> list[tuple[str, str]]:
    return [(key, found.label) for key, found in USAGE_RANGES.items()]
