"""What a governed call costs on its way (database queries, Redis round trips), and the usage rollup
that left the request path: folded from the ledger by a periodic task, exactly once, crash or not."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
import redis
from django.db import connection, transaction
from django.db.models import Count, Q, Sum
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context

from apps.accounts.principals import Principal
from apps.llm import caching
from apps.llm.breaker import OPEN, breaker_key, breaker_record, breaker_state
from apps.llm.budgets import attempt_settlements_flush, attempts_abandon, usage_fold
from apps.llm.calls import ChatOutcome, chat_call_parse, chat_complete
from apps.llm.models import AttemptStatus, BudgetHold, BudgetWindow, CachedResponse, CallContent, UsageAttempt
from apps.llm.platform.models import UsageRollup
from apps.llm.services import budget_set, llm_settings_set
from apps.llm.tasks import llm_usage_fold
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from cognitionos.redis import redis_client
from tests.conftest import LiveDb
from tests.factories import TEST_ACTOR

KEY = Principal(kind="api_key", id="7", label="key 7")


def _call(organization: Organization, text: str = "Hello there", **extra: Any) -> str:
    call = chat_call_parse(
        {"model": "simulated-mini", "messages": [{"role": "user", "content": text}], "cache": {"skip": True}, **extra}
    )
    with organization_schema(organization):
        return chat_complete(organization=organization, principal=KEY, call=call).cache


def _budgeted(organization: Organization) -> None:
    budget_set(organization=organization, scope="organization", period="day", limit_usd=Decimal(100), actor=TEST_ACTOR)
    budget_set(
        organization=organization, scope="key", scope_id="7", period="month", limit_usd=Decimal(100), actor=TEST_ACTOR
    )


@contextmanager
def redis_round_trips() -> Iterator[list[str]]:
    """The Redis round trips made inside: a command, or a whole pipeline."""
    trips: list[str] = []
    command, pipeline = redis.Redis.execute_command, redis.client.Pipeline.execute

    def counted_command(self: redis.Redis, *args: Any, **options: Any) -> Any:
        trips.append(str(args[0]))
        return command(self, *args, **options)  # type: ignore[no-untyped-call]

    def counted_pipeline(self: redis.client.Pipeline, raise_on_error: bool = True) -> Any:
        trips.append("pipeline")
        return pipeline(self, raise_on_error)

    redis.Redis.execute_command = counted_command  # type: ignore[method-assign]
    redis.client.Pipeline.execute = counted_pipeline  # type: ignore[method-assign]
    try:
        yield trips
    finally:
        redis.Redis.execute_command = command  # type: ignore[method-assign]
        redis.client.Pipeline.execute = pipeline  # type: ignore[method-assign]


def test_a_miss_costs_two_statements_and_two_redis_round_trips(
    two_tenants: tuple[Organization, Organization], settings: Any
) -> None:
    """Reserve (ledger row and holds) and settle (ledger, holds): no rollup, settings or key
    lookups once warm, and no budget window: the settled holds reach it with the background fold.
    Redis: admission (rate limits with the breaker's state), then the latency observation with the
    breaker's closing. (Here the test's transaction wraps the reservation in a savepoint; on its
    own, as in production, it has none.)"""
    settings.LLM_BUDGET_FOLD_SECONDS = 3600  # as in production, but the fold never runs during the test
    organization = two_tenants[0]
    _budgeted(organization)
    with schema_context(organization.schema_name):
        assert _call(organization) == "miss"  # warms the per-process caches (catalog, settings, own keys)
        with CaptureQueriesContext(connection) as queries, redis_round_trips() as trips:
            assert _call(organization, "Hello again") == "miss"
    statements = [q["sql"].split()[:3] for q in queries if "SAVEPOINT" not in q["sql"]]
    assert statements == [["WITH", "applicable", "AS"], ["WITH", "settling", "AS"]], statements
    # The settlement reads how full the windows are, but neither locks nor writes them.
    (settle,) = [q["sql"] for q in queries if q["sql"].split()[:2] == ["WITH", "settling"]]
    assert "FOR UPDATE" not in settle and "llm_budgetwindow w SET" not in settle, settle
    assert not [q for q in queries if "usagerollup" in q["sql"]]
    assert trips == ["EVALSHA", "EVALSHA"]


def test_a_cacheable_miss_adds_one_read_and_one_write_of_the_durable_cache(
    two_tenants: tuple[Organization, Organization], settings: Any
) -> None:
    """The exact caches are looked up first (L4, the durable one, once the organization has any
    rows: by the schema's name, so the request's first statement needs no `SET search_path`) and
    filled after: the L4 row in one upsert, not a transaction of three or four round trips."""
    settings.LLM_BUDGET_FOLD_SECONDS = 3600
    organization = two_tenants[0]
    _budgeted(organization)
    call = chat_call_parse({"model": "simulated-mini", "messages": [{"role": "user", "content": "First"}]})
    with schema_context(organization.schema_name):
        chat_complete(organization=organization, principal=KEY, call=call)  # warm, and an L4 row exists
        call = chat_call_parse({"model": "simulated-mini", "messages": [{"role": "user", "content": "Second"}]})
        with CaptureQueriesContext(connection) as queries:
            assert chat_complete(organization=organization, principal=KEY, call=call).cache == "miss"
        again = chat_complete(organization=organization, principal=KEY, call=call)
    statements = [q["sql"].split()[:3] for q in queries if "SAVEPOINT" not in q["sql"]]
    assert statements == [
        ["SELECT", "response,", "cost_usd,"],
        ["WITH", "applicable", "AS"],
        ["WITH", "settling", "AS"],
        ["INSERT", "INTO", f'"{organization.schema_name}".llm_cachedresponse'],
    ], statements
    assert f'FROM "{organization.schema_name}".llm_cachedresponse' in queries[0]["sql"]
    assert again.cache == "l1"
    with schema_context(two_tenants[1].schema_name):
        assert not CachedResponse.objects.exists()  # the other organization's durable cache is its own


def test_the_reservation_and_the_settlement_are_prepared_once_warm(
    two_tenants: tuple[Organization, Organization],
) -> None:
    """Bound on the server, so that PostgreSQL stops parsing and planning them after a few calls on
    a connection (about half of each statement's time); the other tenant's statements are its own.
    (In one transaction, so that every call keeps this connection instead of the pool's next, once
    each tenant's budget windows exist: creating them rolls back a savepoint, and psycopg forgets
    its prepared statements on any rollback.)"""
    for organization in two_tenants:
        _budgeted(organization)
        _call(organization, "Warm-up")
    with transaction.atomic():
        for organization in two_tenants:
            for number in range(6):
                _call(organization, f"Question {number}")
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement FROM pg_prepared_statements WHERE NOT from_sql")
            prepared = [row[0] for row in cursor.fetchall()]
    for organization in two_tenants:
        schema = connection.ops.quote_name(organization.schema_name)
        assert sorted(s.split()[:3] for s in prepared if f"{schema}.llm_usageattempt" in s) == [
            ["WITH", "applicable", "AS"],
            ["WITH", "settling", "AS"],
        ]


def test_the_breaker_read_with_admission_still_skips_an_open_breaker_and_a_success_closes_one(
    two_tenants: tuple[Organization, Organization],
) -> None:
    organization = two_tenants[0]
    for _ in range(10):
        breaker_record("simulator", "simulated-pro", success=False)
    assert breaker_state("simulator", "simulated-pro") == OPEN
    pro = chat_call_parse(
        {"model": "simulated-pro", "messages": [{"role": "user", "content": "hi"}], "cache": {"skip": True}}
    )
    with schema_context(organization.schema_name):
        assert chat_complete(organization=organization, principal=KEY, call=pro).model == "simulated-mini"
    breaker_record("simulator", "simulated-mini", success=False)  # one failure: counted, not open
    assert redis_client().exists(breaker_key("simulator", "simulated-mini"))
    _call(organization)
    assert not redis_client().exists(breaker_key("simulator", "simulated-mini"))  # the success reset it


def _ledger_totals(organization: Organization) -> dict[str, Any]:
    with schema_context(organization.schema_name):
        settled = UsageAttempt.objects.exclude(status=AttemptStatus.RESERVED)
        totals = settled.aggregate(
            requests=Count("id", filter=Q(status__in=[AttemptStatus.SUCCEEDED, AttemptStatus.CACHE_HIT])),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost_usd=Sum("cost_usd"),
        )
    return totals


def _rollup_totals(organization: Organization) -> dict[str, Any]:
    return UsageRollup.objects.filter(organization=organization).aggregate(
        requests=Sum("requests"),
        input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"),
        cost_usd=Sum("cost_usd"),
    )


def test_the_fold_adds_each_settled_row_once_and_only_the_organizations_own(
    two_tenants: tuple[Organization, Organization],
) -> None:
    tenant_a, tenant_b = two_tenants
    for text in ("one", "two", "three"):
        _call(tenant_a, text)
    _call(tenant_b, "b's")
    assert not UsageRollup.objects.exists()  # the calls did not touch it
    assert llm_usage_fold.apply(kwargs={"tenant_id": tenant_a.pk}).get() == 3
    assert _rollup_totals(tenant_a) == _ledger_totals(tenant_a)
    assert _rollup_totals(tenant_a)["requests"] == 3
    assert not UsageRollup.objects.filter(organization=tenant_b).exists()  # B's rows are B's fold's
    assert usage_fold(organization=tenant_a) == 0  # nothing twice
    assert _rollup_totals(tenant_a) == _ledger_totals(tenant_a)
    assert usage_fold(organization=tenant_b) == 1
    assert _rollup_totals(tenant_b) == _ledger_totals(tenant_b)


def test_no_usage_is_lost_or_counted_twice_when_a_fold_dies_midway(
    two_tenants: tuple[Organization, Organization], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of one; the process dies during the third: the two before it are in the rollup and
    marked, the third is neither, and the next fold (the beat's, after the crash) adds the rest."""
    organization = two_tenants[0]
    for text in ("one", "two", "three", "four", "five"):
        _call(organization, text)
    statements = 0

    class Crash(Exception):
        pass

    real_execute = connection.cursor().__class__.execute

    def counting_execute(self: Any, sql: str, params: Any = None) -> Any:
        nonlocal statements
        if "rolled_up = true" in sql:
            statements += 1
            if statements == 3:
                raise Crash
        return real_execute(self, sql, params)

    monkeypatch.setattr(connection.cursor().__class__, "execute", counting_execute)
    with pytest.raises(Crash):
        usage_fold(organization=organization, batch=1)
    monkeypatch.undo()
    assert _rollup_totals(organization)["requests"] == 2
    with schema_context(organization.schema_name):
        assert UsageAttempt.objects.filter(rolled_up=True).count() == 2
    assert usage_fold(organization=organization) == 3
    assert _rollup_totals(organization) == _ledger_totals(organization)
    assert _rollup_totals(organization)["requests"] == 5


def test_a_miss_reads_l4_only_when_the_organization_has_l4_rows(
    two_tenants: tuple[Organization, Organization],
) -> None:
    """A's cache is empty: its misses make no L4 query (a flag read with L2 says so). B's has a row:
    B's miss reads L4, and once L1 and L2 have lost an answer, L4 still serves it."""
    tenant_a, tenant_b = two_tenants
    with organization_schema(tenant_b):
        caching.cache_put(
            schema=tenant_b.schema_name, key="k", model_name="simulated-mini", body={"a": 1}, cost=Decimal(0), ttl=600
        )
    for organization in (tenant_a, tenant_b):
        with schema_context(organization.schema_name):
            caching.cache_get(schema=organization.schema_name, key="warm")  # settles the flag
            with CaptureQueriesContext(connection) as queries:
                assert caching.cache_get(schema=organization.schema_name, key="other") is None
            l4_reads = [q for q in queries if "llm_cachedresponse" in q["sql"]]
            assert len(l4_reads) == (0 if organization == tenant_a else 1)
    caching.cache_fast_layers_drop(schema=tenant_b.schema_name)  # L1, L2 and the flag gone
    with schema_context(tenant_b.schema_name):
        hit = caching.cache_get(schema=tenant_b.schema_name, key="k")
    assert hit is not None and (hit.layer, hit.body) == ("l4", {"a": 1})
    with schema_context(tenant_a.schema_name):  # A's flag said none; a write makes A read L4 again
        caching.cache_put(
            schema=tenant_a.schema_name, key="k", model_name="simulated-mini", body={"a": 2}, cost=Decimal(0), ttl=600
        )
        caching.l1.clear()
        redis_client().delete(f"llm:cache:{tenant_a.schema_name}:k")
        hit = caching.cache_get(schema=tenant_a.schema_name, key="k")
    assert hit is not None and (hit.layer, hit.body) == ("l4", {"a": 2})


def _answer(organization: Organization, text: str) -> ChatOutcome:
    call = chat_call_parse(
        {"model": "simulated-mini", "messages": [{"role": "user", "content": text}], "cache": {"skip": True}}
    )
    with organization_schema(organization):
        return chat_complete(organization=organization, principal=KEY, call=call)


def _ledger(organization: Organization) -> tuple[list[UsageAttempt], BudgetWindow, int, dict[str, str]]:
    """The organization's attempts, its organization budget's window, open holds and stored answers."""
    with schema_context(organization.schema_name):
        return (
            list(UsageAttempt.objects.order_by("id")),
            BudgetWindow.objects.get(budget__scope="organization"),
            BudgetHold.objects.count(),
            dict(CallContent.objects.values_list("request_id", "answer")),
        )


@pytest.mark.integration
def test_an_answer_waits_for_no_settlement_and_the_batch_settles_each_organizations_own(
    live_db: LiveDb, settings: Any
) -> None:
    """Without a caller's record to commit with it (the gateway), an answered call's settlement goes
    in the next batch: the answer is returned while its attempt is still reserved, its hold counted
    at the worst case. The flush settles each organization's attempts in its own schema, with their
    content, holds and window. A call that leaves a hard limit more than half taken settles at once,
    and an attempt the sweeper settled first (its process died) is not settled again."""
    settings.LLM_SETTLE_BATCH_SECONDS = 3600  # only the explicit flushes write
    a, b = live_db.organization(slug="settle-a"), live_db.organization(slug="settle-b")
    for organization in (a, b):
        with organization_schema(organization):
            budget_set(
                organization=organization, scope="organization", period="day", limit_usd=Decimal(100), actor=TEST_ACTOR
            )
    with organization_schema(b):
        llm_settings_set(organization=b, actor=TEST_ACTOR, store_content=False)
    answers_a = [_answer(a, "First of A"), _answer(a, "Second of A")]
    answer_b = _answer(b, "First of B")
    attempts, window, holds, contents = _ledger(a)
    assert [attempt.status for attempt in attempts] == [AttemptStatus.RESERVED] * 2
    reserved = sum((attempt.reserved_usd for attempt in attempts), Decimal(0))
    assert (window.spent_usd, window.reserved_usd, holds, contents) == (Decimal(0), reserved, 2, {})

    assert attempt_settlements_flush() == 3
    attempts, window, holds, contents = _ledger(a)
    assert [(attempt.status, attempt.cost_usd) for attempt in attempts] == [
        (AttemptStatus.SUCCEEDED, answer.cost_usd) for answer in answers_a
    ]
    assert all(answer.cost_usd > 0 for answer in answers_a)
    assert (window.spent_usd, window.reserved_usd, holds) == (
        answers_a[0].cost_usd + answers_a[1].cost_usd,
        Decimal(0),
        0,
    )
    assert contents == {answer.request_id: answer.body["choices"][0]["message"]["content"] for answer in answers_a}
    attempts, window, holds, contents = _ledger(b)  # B keeps no content; A's rows are not in its schema
    assert [(attempt.request_id, attempt.status) for attempt in attempts] == [
        (answer_b.request_id, AttemptStatus.SUCCEEDED)
    ]
    assert (window.spent_usd, window.reserved_usd, holds, contents) == (answer_b.cost_usd, Decimal(0), 0, {})
    assert attempt_settlements_flush() == 0

    # B's next call takes more than half of what its hard limit leaves: settled before it returns.
    with organization_schema(b):
        budget_set(
            organization=b,
            scope="organization",
            period="day",
            limit_usd=answer_b.cost_usd + attempts[0].reserved_usd * Decimal("1.5"),
            actor=TEST_ACTOR,
        )
    near = _answer(b, "First of B")
    attempts, window, holds, _ = _ledger(b)
    assert [attempt.status for attempt in attempts] == [AttemptStatus.SUCCEEDED] * 2
    assert (window.spent_usd, holds) == (answer_b.cost_usd + near.cost_usd, 0)

    # A's process "dies" with a settlement waiting: the sweeper charges the reservation, once.
    late = _answer(a, "Third of A")
    with organization_schema(a):
        assert attempts_abandon(organization=a, request_ids=[late.request_id]) == 1
    assert attempt_settlements_flush() == 1
    attempts, window, holds, _ = _ledger(a)
    assert (attempts[-1].status, attempts[-1].cost_usd) == (AttemptStatus.SWEPT, attempts[-1].reserved_usd)
    assert attempts[-1].reserved_usd > late.cost_usd
    assert window.spent_usd == sum(answer.cost_usd for answer in answers_a) + attempts[-1].reserved_usd
