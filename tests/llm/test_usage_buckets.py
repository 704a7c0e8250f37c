"""The dashboard's rollup: usage_fold adds each settled ledger row once to its UTC hour and its UTC
day (UsageBucket), by model, API key and user, with errors and a latency histogram; usage_series
reads a range back from the buckets alone."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings
from django_tenants.utils import schema_context

from apps.llm.budgets import usage_fold
from apps.llm.models import AttemptStatus, UsageAttempt
from apps.llm.platform.models import LATENCY_SLOT_FLOORS_MS, LATENCY_SLOTS, UsageBucket, UsageRollup
from apps.llm.services import usage_hours_prune
from apps.llm.usage import latency_percentile, usage_series
from apps.tenants.models import Organization

NOW = dt.datetime(2026, 11, 20, 15, 40, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def attempt(organization: Organization, **fields: Any) -> UsageAttempt:
    """A settled ledger row written as the engine would leave it (defaults: a key's success)."""
    values: dict[str, Any] = {
        "request_id": uuid.uuid4().hex,
        "attempt": 1,
        "status": AttemptStatus.SUCCEEDED,
        "principal_kind": "api_key",
        "model_name": "simulated-mini",
        "provider": "simulator",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_usd": Decimal("0.001"),
        "settled_at": NOW,
        "latency_ms": 100,
        **fields,
    }
    with schema_context(organization.schema_name):
        return UsageAttempt.objects.create(**values)


def slot(latency_ms: int) -> int:
    return sum(1 for floor in LATENCY_SLOT_FLOORS_MS[1:] if floor <= latency_ms)


def bucket(organization: Organization, span: str, start: dt.datetime, **dimensions: Any) -> UsageBucket:
    return UsageBucket.objects.get(organization=organization, span=span, start=start, **dimensions)


def test_each_row_lands_in_its_hour_and_its_day_by_key_and_user_with_errors_and_latencies(
    two_tenants: tuple[Organization, Organization],
) -> None:
    organization = two_tenants[0]
    this_hour = NOW.replace(minute=0)
    day = NOW.replace(hour=0, minute=0)
    attempt(organization, api_key_id=7, latency_ms=90)
    attempt(organization, api_key_id=7, latency_ms=1500, settled_at=this_hour + dt.timedelta(minutes=59, seconds=59))
    attempt(organization, api_key_id=7, status=AttemptStatus.FAILED, latency_ms=30_000, cost_usd=0, error_class="x")
    attempt(
        organization,
        api_key_id=7,
        status=AttemptStatus.CACHE_HIT,
        cost_usd=0,
        saved_usd=Decimal("0.001"),
        latency_ms=None,
        cache_layer="l1",
    )
    attempt(organization, principal_kind="user", user_id=42, settled_at=this_hour - HOUR, latency_ms=0)
    attempt(organization, principal_kind="user", user_id=42, status=AttemptStatus.SWEPT, settled_at=day - HOUR)
    attempt(organization, principal_kind="user", user_id=42, status=AttemptStatus.RESERVED, settled_at=None)

    assert usage_fold(organization=organization) == 6  # the reservation in flight waits

    keyed = bucket(organization, "hour", this_hour, model_name="simulated-mini", api_key_id=7, user_id=0)
    assert (keyed.requests, keyed.cache_hits, keyed.errors) == (3, 1, 1)
    assert (keyed.input_tokens, keyed.output_tokens) == (40, 20)
    assert (keyed.cost_usd, keyed.saved_usd) == (Decimal("0.002"), Decimal("0.001"))
    expected = [0] * LATENCY_SLOTS
    expected[slot(90)] += 1
    expected[slot(1500)] += 1  # the failure's 30 s and the hit without a latency are not answers' latencies
    assert keyed.latency_histogram == expected
    person = bucket(organization, "hour", this_hour - HOUR, api_key_id=0, user_id=42)
    assert (person.requests, person.errors, person.latency_histogram[0]) == (1, 0, 1)
    # The day holds both hours; the sweeper's settlement yesterday is an error of yesterday.
    assert bucket(organization, "day", day, api_key_id=7).requests == 3
    assert bucket(organization, "day", day, user_id=42).requests == 1
    swept = bucket(organization, "day", day - dt.timedelta(days=1), user_id=42)
    assert (swept.requests, swept.errors) == (0, 1)
    assert bucket(organization, "hour", day - HOUR, user_id=42).errors == 1
    # Each hour's and day's total: every model, key and person of it together.
    hour_total = bucket(organization, "hour_total", this_hour)
    assert (hour_total.model_name, hour_total.api_key_id, hour_total.user_id) == ("", 0, 0)
    assert (hour_total.requests, hour_total.errors, hour_total.latency_histogram) == (3, 1, expected)
    day_total = bucket(organization, "day_total", day)
    assert (day_total.requests, day_total.cache_hits, day_total.input_tokens) == (4, 1, 50)
    assert sum(day_total.latency_histogram) == 3
    assert not UsageBucket.objects.filter(organization=two_tenants[1]).exists()
    # The billing rollup is filled as before, by day, model and key.
    assert UsageRollup.objects.get(organization=organization, day=day.date(), api_key_id=7).requests == 3


def test_folding_again_adds_only_new_rows_and_histograms_add_slot_by_slot(
    two_tenants: tuple[Organization, Organization],
) -> None:
    organization = two_tenants[0]
    this_hour = NOW.replace(minute=0)
    for latency in (5, 50, 500):
        attempt(organization, api_key_id=1, latency_ms=latency)
    assert usage_fold(organization=organization, batch=2) == 3  # two statements, one bucket row
    assert usage_fold(organization=organization) == 0
    first = bucket(organization, "hour", this_hour, api_key_id=1)
    assert first.requests == 3 and sum(first.latency_histogram) == 3

    for latency in (50, 5000):
        attempt(organization, api_key_id=1, latency_ms=latency)
    assert usage_fold(organization=organization) == 2
    added = bucket(organization, "hour", this_hour, api_key_id=1)
    assert added.requests == 5
    expected = [0] * LATENCY_SLOTS
    for latency in (5, 50, 500, 50, 5000):
        expected[slot(latency)] += 1
    assert added.latency_histogram == expected
    assert bucket(organization, "day", this_hour.replace(hour=0), api_key_id=1).latency_histogram == expected
    with schema_context(organization.schema_name):
        assert not UsageAttempt.objects.filter(rolled_up=False).exists()


def test_a_fold_that_dies_adds_its_rows_to_neither_table_and_the_next_adds_them_once(
    two_tenants: tuple[Organization, Organization], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both tables are written by the statement that marks the rows: all of it happens or none."""
    organization = two_tenants[0]
    for n in range(3):
        attempt(organization, api_key_id=1, latency_ms=10 * (n + 1))

    class Crash(Exception):
        pass

    real_execute = connection.cursor().__class__.execute
    statements = 0

    def crashing_execute(self: Any, sql: str, params: Any = None) -> Any:
        nonlocal statements
        result = real_execute(self, sql, params)
        if "rolled_up = true" in sql:
            statements += 1
            if statements == 2:
                raise Crash  # after the statement ran, before its transaction commits
        return result

    monkeypatch.setattr(connection.cursor().__class__, "execute", crashing_execute)
    with pytest.raises(Crash):
        usage_fold(organization=organization, batch=1)
    monkeypatch.undo()
    assert bucket(organization, "hour", NOW.replace(minute=0), api_key_id=1).requests == 1
    assert usage_fold(organization=organization) == 2
    assert bucket(organization, "hour", NOW.replace(minute=0), api_key_id=1).requests == 3
    assert bucket(organization, "day", NOW.replace(hour=0, minute=0), api_key_id=1).requests == 3


def test_a_range_is_read_from_the_buckets_in_one_query_and_matches_the_ledger(
    two_tenants: tuple[Organization, Organization],
) -> None:
    organization, other = two_tenants
    this_hour = NOW.replace(minute=0)
    latencies = [20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 10240]
    for n, latency in enumerate(latencies):
        attempt(
            organization,
            model_name="simulated-pro" if n % 2 else "simulated-mini",
            api_key_id=3 if n < 6 else None,
            principal_kind="api_key" if n < 6 else "user",
            user_id=None if n < 6 else 9,
            latency_ms=latency,
            settled_at=this_hour - HOUR * (n % 3),
        )
    attempt(
        organization,
        api_key_id=3,
        status=AttemptStatus.FAILED,
        latency_ms=50,
        cost_usd=0,
        input_tokens=0,
        output_tokens=0,
        error_class="timeout",
    )
    attempt(organization, api_key_id=3, settled_at=NOW - dt.timedelta(days=2))  # outside 24 h
    attempt(other, api_key_id=3, cost_usd=Decimal(5))
    usage_fold(organization=organization)
    usage_fold(organization=other)

    with CaptureQueriesContext(connection) as queries:
        series = usage_series(organization=organization, range_key="24h", now=NOW)
    assert len([q for q in queries if not q["sql"].startswith("SET search_path")]) == 1
    assert len(series.points) == 24 and series.points[-1].start == this_hour
    assert series.end == this_hour + HOUR
    assert [point.totals.requests for point in series.points[-3:]] == [3, 3, 4]
    total = series.total
    assert (total.requests, total.errors, total.cache_hits) == (10, 1, 0)
    assert total.cost_usd == Decimal("0.010") and total.tokens == 150
    assert {name: totals.requests for name, totals in series.by_model} == {
        "simulated-mini": 5,
        "simulated-pro": 5,
    }
    assert {key: totals.requests for key, totals in series.by_key} == {3: 6, 0: 4}
    assert {user: totals.requests for user, totals in series.by_user} == {0: 6, 9: 4}
    # Percentiles from the histogram: within a slot's width (about 41%) of the exact ones.
    assert total.p50_ms is not None and 320 <= total.p50_ms <= 640 * 1.42
    assert total.p95_ms is not None and 5120 <= total.p95_ms <= 10240 * 1.42
    assert sum(p.totals.requests for p in usage_series(organization=organization, range_key="7d", now=NOW).points) == 11
    month = usage_series(organization=organization, range_key="30d", now=NOW)
    assert len(month.points) == 30 and month.points[-1].start == NOW.replace(hour=0, minute=0)
    assert month.total.requests == 11 and month.total.errors == 1


def test_latency_percentiles_interpolate_in_their_slot() -> None:
    histogram = [0] * LATENCY_SLOTS
    assert latency_percentile(histogram, 0.5) is None
    histogram[slot(100)] = 10  # 91 <= x < 128
    assert 91 <= (latency_percentile(histogram, 0.5) or 0) <= 128
    histogram[-1] = 90  # beyond the last floor: the floor
    assert latency_percentile(histogram, 0.95) == LATENCY_SLOT_FLOORS_MS[-1]


def test_hour_buckets_past_their_keeping_are_pruned_and_day_buckets_stay(
    two_tenants: tuple[Organization, Organization],
) -> None:
    for organization in two_tenants:
        attempt(organization, created_at=NOW - dt.timedelta(days=40), settled_at=NOW - dt.timedelta(days=40))
        attempt(organization, created_at=NOW - dt.timedelta(days=2), settled_at=NOW - dt.timedelta(days=2))
        usage_fold(organization=organization)
    spans = ("hour", "hour_total")
    assert UsageBucket.objects.filter(span__in=spans).count() == 8
    with override_settings(USAGE_HOUR_BUCKETS_DAYS=35):
        assert usage_hours_prune(now=NOW, batch=1) == 4  # in batches of one: the loop ends
    kept = UsageBucket.objects.filter(span__in=spans)
    assert kept.count() == 4 and all(row.start > NOW - dt.timedelta(days=35) for row in kept)
    assert UsageBucket.objects.filter(span__in=("day", "day_total")).count() == 8
