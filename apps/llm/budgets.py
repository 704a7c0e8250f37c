"""Reserve before the call, settle after it: budgets that hold under any concurrency.

Before a provider call the worst-case cost is added to `reserved_usd` of every budget window that
applies (organization, user, API key; day and month), each with one conditional UPDATE that a
hard limit can refuse, in one transaction with the attempt's ledger row. After the call the actual
cost moves to `spent_usd` and the hold is released, in one transaction with the settled ledger row;
a periodic task folds settled rows into the public rollup (usage_fold). Row locks taken by the
UPDATEs serialize concurrent reservations on the same window, so spend plus reservations never
passes a hard limit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from psycopg_pool import PoolTimeout

from apps.accounts.principals import Principal
from apps.audit.services import audit_record
from apps.llm import metrics
from apps.llm.content import ContentDraft
from apps.llm.models import AttemptStatus, Budget, BudgetPeriod, BudgetWindow, UsageAttempt
from apps.llm.platform.models import LATENCY_SLOT_FLOORS_MS, LATENCY_SLOTS, UsageBucket, UsageRollup
from apps.tenants.connection import organization_schema, server_binding_cursor
from apps.tenants.models import Organization
from cognitionos.background_batch import BackgroundBatch

logger = logging.getLogger(__name__)


class BudgetExceeded(Exception):
    def __init__(self, *, scope: str, period: str, limit_usd: Decimal | None) -> None:
        self.scope, self.period, self.limit_usd = scope, period, limit_usd
        where = f"the {scope} budget" + (f" ({period}, ${limit_usd})" if limit_usd is not None else "")
        super().__init__(f"{where} does not allow this request's worst-case cost")


@dataclass(frozen=True)
class Spender:
    """Who a call is billed to, as budgets see it."""

    organization: Organization
    principal: Principal
    # The entry point the call came through (apps.llm.models.CallSource), for the request log.
    source: str = ""

    def ledger_fields(self) -> dict[str, Any]:
        """Who the ledger row is for: the principal by kind, id and label (never a foreign key),
        and where the call came from."""
        return {
            "source": self.source,
            "principal_kind": self.principal.kind,
            "principal_id": self.principal.id or "",
            "principal_label": self.principal.label,
            "api_key_id": self.api_key_id,
            "user_id": self.user_id,
        }

    @property
    def api_key_id(self) -> int | None:
        return int(self.principal.id) if self.principal.kind == "api_key" and self.principal.id else None

    @property
    def user_id(self) -> int | None:
        return int(self.principal.id) if self.principal.kind in ("user", "operator") and self.principal.id else None


def period_start(period: str, now: dt.datetime) -> dt.date:
    today = now.astimezone(dt.UTC).date()
    return today if period == BudgetPeriod.DAY else today.replace(day=1)


def _scope_filter(spender: Spender) -> tuple[str, list[str]]:
    """The budgets that apply to a spender, as a WHERE clause on `llm_budget b` with named parameters."""
    # 'plan': the platform's hard budget of plans without overage (apps.llm.plan_budget).
    clauses, params = ["(b.scope = 'organization')", "(b.scope = 'plan')"], list[str]()
    for scope, scope_id in (("key", spender.api_key_id), ("user", spender.user_id)):
        if scope_id is not None:
            clauses.append(f"(b.scope = '{scope}' AND b.scope_id = %(scope_{len(params)})s)")
            params.append(str(scope_id))
    return " OR ".join(clauses), params


_RESERVE = """
WITH applicable AS (
    SELECT b.id AS budget_id, b.hard, b.limit_usd, w.id AS window_id
    FROM {schema}.llm_budget b
    LEFT JOIN {schema}.llm_budgetwindow w ON w.budget_id = b.id
        AND w.period_start = CASE WHEN b.period = 'day' THEN %(day)s::date ELSE %(month)s::date END
    WHERE {scopes}
), attempt AS (
    INSERT INTO {schema}.llm_usageattempt (request_id, attempt, status, hold_expires_at, principal_kind, principal_id,
        principal_label, api_key_id, user_id, model_name, provider, paid_by, input_tokens, cached_input_tokens,
        output_tokens, reserved_usd, cost_usd, saved_usd, cache_layer, error_class, source, model_requested)
    VALUES (%(request_id)s, %(attempt)s, 'reserved', %(expires)s, %(kind)s, %(principal_id)s, %(label)s,
        %(api_key_id)s, %(user_id)s, %(model)s, %(provider)s, %(paid_by)s, 0, 0, 0, %(amount)s, 0, 0, '', '',
        %(source)s, %(model_requested)s)
    RETURNING id, created_at
), locked AS (
    SELECT id FROM {schema}.llm_budgetwindow WHERE id IN (SELECT window_id FROM applicable) ORDER BY id FOR UPDATE
), raised AS (
    UPDATE {schema}.llm_budgetwindow w SET reserved_usd = w.reserved_usd + %(amount)s
    FROM locked, applicable a
    WHERE w.id = locked.id AND a.window_id = w.id
      AND (NOT a.hard OR w.spent_usd + w.reserved_usd + %(amount)s <= a.limit_usd)
    RETURNING w.id, a.hard AND (w.spent_usd + w.reserved_usd) * 2 >= a.limit_usd AS near
), held AS (
    INSERT INTO {schema}.llm_budgethold (attempt_id, window_id, amount_usd)
    SELECT attempt.id, raised.id, %(amount)s FROM attempt, raised
    RETURNING window_id
)
SELECT attempt.id, attempt.created_at,
    CASE
        WHEN EXISTS (SELECT 1 FROM applicable WHERE window_id IS NULL)
            THEN public.cognitionos_budget_refused('missing', NULL)
        WHEN (SELECT count(*) FROM held) < (SELECT count(*) FROM applicable)
            THEN public.cognitionos_budget_refused('exceeded', (SELECT min(window_id) FROM applicable
                WHERE window_id NOT IN (SELECT window_id FROM held)))
    END,
    coalesce((SELECT bool_or(near) FROM raised), false)
FROM attempt
"""


def attempt_reserve(
    *,
    spender: Spender,
    request_id: str,
    attempt: int,
    model_name: str,
    provider: str,
    amount_usd: Decimal,
    max_cost_usd: Decimal | None,
    paid_by: str = "platform",
    model_requested: str = "",
) -> UsageAttempt:
    """Write the attempt's ledger row and hold `amount_usd` on every applicable budget, or refuse.

    One statement, atomic by itself: it inserts the attempt, locks the budget windows in id order,
    raises every reservation a hard limit allows, records the holds, and aborts (undoing all of
    it) unless every window took its hold. Windows of a new period are created on first use.
    """
    if max_cost_usd is not None and amount_usd > max_cost_usd:
        raise BudgetExceeded(scope="request", period="request", limit_usd=max_cost_usd)
    now = timezone.now()
    scopes, scope_params = _scope_filter(spender)
    expires = now + dt.timedelta(seconds=settings.LLM_HOLD_SECONDS)
    params: dict[str, Any] = {
        "day": period_start(BudgetPeriod.DAY, now),
        "month": period_start(BudgetPeriod.MONTH, now),
        "request_id": request_id,
        "attempt": attempt,
        "expires": now + dt.timedelta(seconds=settings.LLM_HOLD_SECONDS),
        "kind": spender.principal.kind,
        "principal_id": spender.principal.id or "",
        "label": spender.principal.label[:254],
        "api_key_id": spender.api_key_id,
        "user_id": spender.user_id,
        "model": model_name,
        "provider": provider,
        "amount": amount_usd,
        "paid_by": paid_by,
        "source": spender.source,
        "model_requested": model_requested[:120],
        **{f"scope_{i}": value for i, value in enumerate(scope_params)},
    }
    statement = _RESERVE.format(scopes=scopes, schema=connection.ops.quote_name(spender.organization.schema_name))
    for _ in range(2):
        try:
            # Inside a caller's transaction the statement needs a savepoint to fail cleanly; on its
            # own (the usual case) it is atomic without one, saving two round trips.
            with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
                with server_binding_cursor(on_search_path=False) as cursor:
                    cursor.execute(statement, params)
                    attempt_id, created_at, _, near_a_hard_limit = cursor.fetchone()
            break
        except DatabaseError as exc:
            code = getattr(exc.__cause__, "sqlstate", None)
            if code == "CB404":
                _windows_create(spender, now)
                continue
            if code == "CB402":
                window_id = int(getattr(getattr(exc.__cause__, "diag", None), "message_detail", 0) or 0)
                budget = Budget.objects.filter(windows__id=window_id).first()
                raise BudgetExceeded(
                    scope=budget.scope if budget else "budget",
                    period=budget.period if budget else "",
                    limit_usd=budget.limit_usd if budget else None,
                ) from exc
            raise
    else:
        raise RuntimeError("budget windows could not be created")
    metrics.OPEN_HOLDS.inc()
    reserved = UsageAttempt(
        pk=attempt_id,
        request_id=request_id,
        attempt=attempt,
        status=AttemptStatus.RESERVED,
        created_at=created_at,
        hold_expires_at=expires,
        **spender.ledger_fields(),
        model_name=model_name,
        model_requested=model_requested[:120],
        provider=provider,
        reserved_usd=amount_usd,
        paid_by=paid_by,
    )
    reserved.near_a_hard_limit = near_a_hard_limit
    return reserved


def _windows_create(spender: Spender, now: dt.datetime) -> None:
    where, params = _scope_filter(spender)
    named = {f"scope_{i}": value for i, value in enumerate(params)}
    budgets = Budget.objects.raw(f"SELECT b.* FROM llm_budget b WHERE {where}", named)  # noqa: S608
    BudgetWindow.objects.bulk_create(
        [BudgetWindow(budget_id=budget.pk, period_start=period_start(budget.period, now)) for budget in budgets],
        ignore_conflicts=True,
    )


@dataclass(frozen=True)
class Settlement:
    status: str
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    saved_usd: Decimal = Decimal(0)
    price_version: int | None = None
    latency_ms: int | None = None
    error_class: str = ""
    cache_layer: str = ""
    # The call's prompt and answer, when the organization keeps content: stored by the settling
    # statement itself (one more CTE), only if it does settle the attempt.
    content: ContentDraft | None = None


# Settled holds into their windows' spend. Every call of an organization reserves on the same window
# rows, so settling there too made each call wait twice in one queue (the second time through a
# job's whole result transaction): a quarter of the CPU of a job. The holds wait in their own rows,
# still counted at their amounts (a hard limit stays exact: it only errs on the safe side), until
# this moves each window's settled holds in one update. SKIP LOCKED: concurrent folds share the work.
_HOLDS_FOLD = """
WITH folded AS (
    DELETE FROM {schema}.llm_budgethold WHERE id IN (
        SELECT id FROM {schema}.llm_budgethold WHERE settled_cost_usd IS NOT NULL FOR UPDATE SKIP LOCKED
    )
    RETURNING window_id, amount_usd, settled_cost_usd
), sums AS (
    SELECT window_id, sum(amount_usd) AS amount, sum(settled_cost_usd) AS cost FROM folded GROUP BY window_id
), locked AS (
    SELECT id FROM {schema}.llm_budgetwindow WHERE id IN (SELECT window_id FROM sums) ORDER BY id FOR UPDATE
), charged AS (
    UPDATE {schema}.llm_budgetwindow w
    SET reserved_usd = w.reserved_usd - sums.amount, spent_usd = w.spent_usd + sums.cost
    FROM sums, locked, {schema}.llm_budget b
    WHERE w.id = sums.window_id AND w.id = locked.id AND b.id = w.budget_id
    RETURNING w.id, b.soft_percent, b.limit_usd, w.spent_usd, w.soft_notified
)
SELECT array_agg(id) FROM charged
WHERE soft_percent IS NOT NULL AND NOT soft_notified AND spent_usd * 100 >= limit_usd * soft_percent
"""


def connection_await() -> None:
    """Get this thread a database connection, waiting for the pool as long as a hold lives.

    Called after a provider answered: its cost must be recorded. Worker threads give their pooled
    connection back during the call, and when many calls end together they all want one again; the
    pool's own wait (a few seconds, right for a web request) would then fail a paid call's
    settlement, its job would stay unfinished, and the reaper would run the paid call again.
    Nothing is held while waiting, so waiting is safe; a hold outlives it and the sweeper settles
    it from the reservation if the database never comes back."""
    if connection.connection is not None:
        return
    deadline = time.monotonic() + settings.LLM_HOLD_SECONDS
    while True:
        try:
            connection.ensure_connection()
            return
        except DatabaseError as exc:
            if not isinstance(exc.__cause__, PoolTimeout) or time.monotonic() >= deadline:
                raise
            logger.warning("the connection pool is exhausted; still waiting to settle a paid provider call")


def attempt_settle(*, organization: Organization, attempt: UsageAttempt, settlement: Settlement) -> bool:
    """Record what the attempt cost, on its ledger row and its holds, in one statement. False if the
    attempt was already settled. Inside a caller's transaction (a job recording its answer with the
    settlement) it is part of that transaction: no savepoint, both commit or neither. The holds
    reach their windows' spend with the next fold (_settlements_write); the public rollup gets the
    cost from usage_fold, off the request path."""
    connection_await()
    atomic = transaction.atomic(savepoint=False) if connection.in_atomic_block else contextlib.nullcontext()
    with atomic:
        return attempt.pk in _settlements_write(organization, [(organization, attempt, settlement)])


def _settled_observe(attempt: UsageAttempt, settlement: Settlement) -> None:
    """The process's metrics of a settled attempt."""
    if settlement.cost_usd > attempt.reserved_usd:
        # The provider reported more than the worst case we priced: the real cost is charged, and
        # the gap is made visible, since it means the reservation bound is wrong.
        metrics.OVERRUNS.labels(attempt.provider, attempt.model_name).inc()
        logger.warning(
            "usage overrun: request %s attempt %d on %s cost $%s, reserved $%s",
            attempt.request_id,
            attempt.attempt,
            attempt.model_name,
            settlement.cost_usd,
            attempt.reserved_usd,
        )
    if settlement.status == AttemptStatus.SWEPT:
        # Its hold was opened by a process that died (its gauge left with it): counted apart.
        metrics.HOLDS_SWEPT.inc()
    else:
        metrics.OPEN_HOLDS.dec()
    metrics.REQUESTS.labels(attempt.provider, attempt.model_name, settlement.status, "miss").inc()
    if settlement.latency_ms is not None:
        metrics.LATENCY.labels(attempt.provider, attempt.model_name).observe(settlement.latency_ms / 1000)
    metrics.TOKENS.labels(attempt.model_name, "input").inc(settlement.input_tokens)
    metrics.TOKENS.labels(attempt.model_name, "output").inc(settlement.output_tokens)
    metrics.COST.labels(attempt.model_name).inc(float(settlement.cost_usd))


def attempt_settle_soon(*, organization: Organization, attempt: UsageAttempt, settlement: Settlement) -> None:
    """Settle an answered attempt with the next batch (within LLM_SETTLE_BATCH_SECONDS), so that its
    answer goes out without waiting for the ledger write; for callers that record nothing of their
    own with the ledger row (the gateway). At once when the batch is off (0, as in the tests),
    inside a transaction, or when a hard limit of the attempt's was more than half taken at its
    reservation: its hold counts at the worst case until settled, which could refuse a burst near
    the limit early. If the process dies first, the sweeper settles the attempt from its
    reservation after LLM_HOLD_SECONDS (status swept, the worst case charged): never unbilled."""
    if settings.LLM_SETTLE_BATCH_SECONDS > 0 and not attempt.near_a_hard_limit and not connection.in_atomic_block:
        _settlements.add((organization, attempt, settlement))
    else:
        connection_await()
        attempt_settle(organization=organization, attempt=attempt, settlement=settlement)


# The settlement of answered attempts of one organization, their columns as arrays (bound in
# binary: in text, psycopg escapes each character of the content in Python). It stores the content
# rows only of the attempts it does settle, and says whether a hard limit of theirs is more than
# half taken.
_SETTLE = """
WITH settling AS (
    SELECT * FROM unnest(%(attempt)b::bigint[], %(status)b::text[], %(input)b::integer[],
        %(cached)b::integer[], %(output)b::integer[], %(cost)b::numeric[], %(price_version)b::integer[],
        %(latency)b::integer[], %(error)b::text[])
        AS s(id, status, input_tokens, cached_input_tokens, output_tokens, cost_usd, price_version,
            latency_ms, error_class)
), settled AS (
    UPDATE {schema}.llm_usageattempt a SET status = s.status, settled_at = %(now)s, hold_expires_at = NULL,
        input_tokens = s.input_tokens, cached_input_tokens = s.cached_input_tokens, output_tokens = s.output_tokens,
        cost_usd = s.cost_usd, price_version = s.price_version, latency_ms = s.latency_ms,
        error_class = s.error_class
    FROM settling s
    WHERE a.id = s.id AND a.status = 'reserved'
    RETURNING a.id, a.request_id, s.cost_usd
), held AS (
    UPDATE {schema}.llm_budgethold h SET settled_cost_usd = settled.cost_usd FROM settled
    WHERE h.attempt_id = settled.id
), stored AS (
    INSERT INTO {schema}.llm_callcontent (request_id, prompt, answer, truncated)
    SELECT c.* FROM unnest(%(content_request)b::text[], %(prompt)b::text[], %(answer)b::text[],
        %(truncated)b::boolean[]) AS c(request_id, prompt, answer, truncated)
    WHERE c.request_id IN (SELECT request_id FROM settled)
    ON CONFLICT (request_id) DO NOTHING
)
SELECT coalesce(array_agg(id), '{{}}'),
    EXISTS (
        SELECT 1 FROM settled
        JOIN {schema}.llm_budgethold h ON h.attempt_id = settled.id
        JOIN {schema}.llm_budgetwindow w ON w.id = h.window_id
        JOIN {schema}.llm_budget b ON b.id = w.budget_id
        WHERE b.hard AND (w.spent_usd + w.reserved_usd) * 2 >= b.limit_usd
    )
FROM settled
"""

PendingSettlement = tuple[Organization, UsageAttempt, Settlement]


def _settlements_write(organization: Organization, group: list[PendingSettlement]) -> set[int]:
    """Settle the organization's attempts in one statement; returns the ids it settled (one
    already settled is left as it is). Their holds are folded into their windows' spend by the next
    fold after the commit (within LLM_BUDGET_FOLD_SECONDS), or at once, in this transaction, when
    that is 0 or a hard limit of theirs is more than half taken: a burst near the limit must not
    be refused early."""
    contents = [(attempt.request_id, s.content) for _, attempt, s in group if s.content is not None]
    schema = connection.ops.quote_name(organization.schema_name)
    with server_binding_cursor(on_search_path=False) as cursor:
        cursor.execute(
            _SETTLE.format(schema=schema),
            {
                "attempt": [attempt.pk for _, attempt, _ in group],
                "status": [s.status for _, _, s in group],
                "now": timezone.now(),
                "input": [s.input_tokens for _, _, s in group],
                "cached": [s.cached_input_tokens for _, _, s in group],
                "output": [s.output_tokens for _, _, s in group],
                "cost": [s.cost_usd for _, _, s in group],
                "price_version": [s.price_version for _, _, s in group],
                "latency": [s.latency_ms for _, _, s in group],
                "error": [s.error_class[:100] for _, _, s in group],
                "content_request": [request_id for request_id, _ in contents],
                "prompt": [content.prompt for _, content in contents],
                "answer": [content.answer for _, content in contents],
                "truncated": [content.truncated for _, content in contents],
            },
        )
        settled, near_a_hard_limit = cursor.fetchone()
    settled_ids = set(settled)
    for _, attempt, settlement in group:
        if attempt.pk in settled_ids:
            _settled_observe(attempt, settlement)
    if settled_ids:
        if settings.LLM_BUDGET_FOLD_SECONDS > 0 and not near_a_hard_limit:
            transaction.on_commit(functools.partial(_folds.add, organization))  # outside one: now
        else:
            _holds_fold(organization)
    return settled_ids


def _settlements_write_batch(pending: list[PendingSettlement]) -> list[PendingSettlement]:
    return _per_organization(pending, lambda item: item[0], _settlements_write, "settlements of answered attempts")


def attempt_settlements_flush() -> int:
    """Settle the waiting answered attempts now. Returns how many were waiting."""
    return _settlements.flush()


def _holds_fold(organization: Organization) -> None:
    """Move the organization's settled holds into their windows' spend (and report soft limits
    crossed). On the organization's schema, in the caller's transaction if there is one."""
    schema = connection.ops.quote_name(organization.schema_name)
    atomic = transaction.atomic(savepoint=False)  # with the settlement, when it is in a transaction
    with organization_schema(organization), atomic, server_binding_cursor(on_search_path=False) as cursor:
        cursor.execute(_HOLDS_FOLD.format(schema=schema))
        (crossed,) = cursor.fetchone()
        if crossed:
            _soft_limits_reached(organization=organization, window_ids=list(crossed))


Batched = TypeVar("Batched")


def _per_organization(
    items: list[Batched],
    organization_of: Callable[[Batched], Organization],
    write: Callable[[Organization, list[Batched]], object],
    what: str,
) -> list[Batched]:
    """A background batch's items written one organization at a time, so that one organization's
    failure leaves the others' written. Returns the failed organizations' items; those of an
    organization deleted (with its schema) while they waited are dropped, since they never can be."""
    groups: dict[int, list[Batched]] = {}
    for item in items:
        groups.setdefault(organization_of(item).pk, []).append(item)
    unwritten: list[Batched] = []
    for group in groups.values():
        organization = organization_of(group[0])
        try:
            write(organization, group)
        except Exception:
            if not Organization.objects.filter(pk=organization.pk).exists():
                logger.warning("%d %s of deleted organization %s dropped", len(group), what, organization.pk)
                continue
            logger.exception("%s of organization %s could not be written", what, organization.pk)
            unwritten.extend(group)
    return unwritten


def _holds_fold_batch(organizations: list[Organization]) -> list[Organization]:
    """One fold per organization (held amounts only refuse early, never overspend)."""
    return _per_organization(
        organizations,
        lambda organization: organization,
        lambda organization, _: _holds_fold(organization),
        "folds of settled budget holds",
    )


_settlements: BackgroundBatch[PendingSettlement] = BackgroundBatch(
    "llm-settlements",
    write=_settlements_write_batch,
    interval_s=lambda: float(settings.LLM_SETTLE_BATCH_SECONDS),
    keep_on_failure=True,  # a ledger row must land (and one that can't is swept from its reservation)
)

_folds: BackgroundBatch[Organization] = BackgroundBatch(
    "llm-budget-fold",
    write=_holds_fold_batch,
    interval_s=lambda: float(settings.LLM_BUDGET_FOLD_SECONDS),
    # Nothing is lost by dropping a failed fold: the holds wait in the database for the
    # organization's next fold or the sweeper (and a deleted organization's never comes back).
    keep_on_failure=False,
    key=lambda organization: organization.pk,  # one fold takes all of an organization's settled holds
)


def budget_holds_fold() -> int:
    """Fold now the settled holds of the organizations waiting for one. Returns how many waited."""
    return _folds.flush()


# A cache hit's ledger row, in _HIT_COLUMNS' order; the other columns take their zero defaults.
HitRow = tuple[Any, ...]
# A hit's content row: (request_id, prompt, answer, truncated), stored when the organization keeps content.
HitContent = tuple[str, str, str, bool]
_HIT_COLUMNS = (
    "request_id", "attempt", "status", "created_at", "settled_at",
    "principal_kind", "principal_id", "principal_label", "api_key_id", "user_id",
    "model_name", "model_requested", "source", "provider", "paid_by", "cache_layer", "saved_usd",
)  # fmt: skip
_HIT_DEFAULTS = {
    "input_tokens": 0, "cached_input_tokens": 0, "output_tokens": 0, "reserved_usd": 0, "cost_usd": 0,
    "error_class": "", "rolled_up": False,
}  # fmt: skip


def cache_hit_record(
    *,
    spender: Spender,
    request_id: str,
    model_name: str,
    cache_layer: str,
    saved_usd: Decimal,
    model_requested: str = "",
    content: ContentDraft | None = None,
) -> None:
    """A request served from cache: no provider cost, and the cost it saved.

    With LLM_HIT_BATCH_SECONDS > 0 (the default outside tests) hits are buffered in the process and
    written in one transaction per organization every so often, and at exit, so a cache hit costs
    no database round trip; a crash can lose the last fraction of a second of hit rows, never a
    charge (hits cost nothing). The call's content, when the organization keeps it, is written with
    its row.
    """
    metrics.REQUESTS.labels("cache", model_name, AttemptStatus.CACHE_HIT, cache_layer).inc()
    metrics.SAVED.labels(model_name).inc(float(saved_usd))
    now = timezone.now()
    who = spender.ledger_fields()
    row: HitRow = (
        request_id, 0, AttemptStatus.CACHE_HIT.value, now, now,
        who["principal_kind"], who["principal_id"], who["principal_label"][:254], who["api_key_id"], who["user_id"],
        model_name, model_requested[:120], who["source"], "cache", "platform", cache_layer, saved_usd,
    )  # fmt: skip
    stored = (request_id, content.prompt, content.answer, content.truncated) if content is not None else None
    if settings.LLM_HIT_BATCH_SECONDS > 0:
        _hits.add((spender.organization, row, stored))
    else:
        _hits_write(spender.organization, [row], [stored] if stored else [])


_HIT_CONTENT_INSERT = """
INSERT INTO {schema}.llm_callcontent (request_id, prompt, answer, truncated)
SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::boolean[])
ON CONFLICT (request_id) DO NOTHING
"""


def _hits_write(organization: Organization, rows: list[HitRow], contents: list[HitContent]) -> None:
    """One COPY of the ledger rows and one statement of array parameters for the content rows: the
    model layer's bulk INSERTs cost a hit more CPU (an instance per row, a statement of thousands of
    placeholders) than the rest of its ledger work together. The content rows commit with their
    ledger rows; without any, one statement needs no transaction."""
    columns = (*_HIT_COLUMNS, *_HIT_DEFAULTS)
    defaults = tuple(_HIT_DEFAULTS.values())
    schema = connection.ops.quote_name(organization.schema_name)
    # Bound on the server, the arrays in binary: 26 instead of 65 us of CPU per hit with its content.
    atomic = transaction.atomic() if contents else contextlib.nullcontext()
    with atomic, server_binding_cursor(on_search_path=False) as cursor:
        with cursor.copy(f"COPY {schema}.llm_usageattempt ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row + defaults)
        if contents:
            columns_of_contents = [list(column) for column in zip(*contents, strict=True)]
            cursor.execute(_HIT_CONTENT_INSERT.format(schema=schema), columns_of_contents)


BufferedHit = tuple[Organization, HitRow, HitContent | None]


def _hits_write_batch(hits: list[BufferedHit]) -> list[BufferedHit]:
    """The buffered hits, one write per organization; returns those of organizations whose write failed."""

    def write(organization: Organization, group: list[BufferedHit]) -> None:
        _hits_write(organization, [row for _, row, _ in group], [content for _, _, content in group if content])

    return _per_organization(hits, lambda hit: hit[0], write, "cache-hit rows")


_hits: BackgroundBatch[BufferedHit] = BackgroundBatch(
    "llm-hit-ledger",
    write=_hits_write_batch,
    interval_s=lambda: float(settings.LLM_HIT_BATCH_SECONDS),
    keep_on_failure=True,  # a ledger row must land
)


def cache_hits_flush() -> int:
    """Write buffered cache-hit rows now. Returns how many were pending."""
    return _hits.flush()


# One statement, so a crash anywhere leaves both the marks and the rollup as they were: each settled
# ledger row is added to the rollup exactly once. SKIP LOCKED lets concurrent folds share the work.
_FOLD = """
WITH picked AS (
    SELECT id FROM llm_usageattempt
    WHERE NOT rolled_up AND status <> 'reserved'
    ORDER BY id LIMIT %(batch)s FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE llm_usageattempt a SET rolled_up = true FROM picked WHERE a.id = picked.id
    RETURNING a.status, coalesce(a.settled_at, a.created_at) AS at, a.model_name, coalesce(a.api_key_id, 0) AS key,
        a.input_tokens, a.output_tokens, a.cost_usd, a.saved_usd, coalesce(a.user_id, 0) AS person, a.latency_ms
), totals AS (
    SELECT (at AT TIME ZONE 'UTC')::date AS day, model_name, key,
        count(*) FILTER (WHERE status IN ('succeeded', 'cache_hit')) AS requests,
        count(*) FILTER (WHERE status = 'cache_hit') AS cache_hits,
        sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
        sum(cost_usd) AS cost_usd, sum(saved_usd) AS saved_usd
    FROM marked GROUP BY 1, 2, 3
), rolled AS (
    INSERT INTO public.{table} AS r (organization_id, day, model_name, api_key_id, requests, cache_hits,
        input_tokens, output_tokens, cost_usd, saved_usd)
    SELECT %(organization)s, day, model_name, key, requests, cache_hits, input_tokens, output_tokens, cost_usd,
        saved_usd
    FROM totals ORDER BY day, model_name, key
    ON CONFLICT (organization_id, day, model_name, api_key_id) DO UPDATE SET
        requests = r.requests + EXCLUDED.requests, cache_hits = r.cache_hits + EXCLUDED.cache_hits,
        input_tokens = r.input_tokens + EXCLUDED.input_tokens,
        output_tokens = r.output_tokens + EXCLUDED.output_tokens,
        cost_usd = r.cost_usd + EXCLUDED.cost_usd, saved_usd = r.saved_usd + EXCLUDED.saved_usd
    RETURNING 1
), hours AS (
    SELECT m.*, date_trunc('hour', m.at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
        date_trunc('day', m.at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day
    FROM marked m
), slotted AS (
    -- The dashboard's buckets (UsageBucket) from the same rows: each in its UTC hour and its UTC day,
    -- and in the organization's total of that hour and day (no model, key or user); an answered
    -- request's latency in its histogram slot (width_bucket: floors after the first).
    SELECT h.status, h.input_tokens, h.output_tokens, h.cost_usd, h.saved_usd, s.*,
        CASE WHEN h.status IN ('succeeded', 'cache_hit') AND h.latency_ms IS NOT NULL
            THEN width_bucket(h.latency_ms, %(latency_floors)s::int[]) END AS slot
    FROM hours h CROSS JOIN LATERAL (VALUES
        ('hour', h.hour, h.model_name, h.key, h.person), ('day', h.day, h.model_name, h.key, h.person),
        ('hour_total', h.hour, '', 0, 0), ('day_total', h.day, '', 0, 0)
    ) AS s(span, start, model_name, key, person)
), buckets AS (
    INSERT INTO public.{buckets} AS b (organization_id, span, start, model_name, api_key_id, user_id, requests,
        cache_hits, errors, input_tokens, output_tokens, cost_usd, saved_usd, latency_histogram)
    SELECT %(organization)s, span, start, model_name, key, person,
        count(*) FILTER (WHERE status IN ('succeeded', 'cache_hit')),
        count(*) FILTER (WHERE status = 'cache_hit'),
        count(*) FILTER (WHERE status IN ('failed', 'swept')),
        sum(input_tokens), sum(output_tokens), sum(cost_usd), sum(saved_usd),
        ARRAY[{slot_counts}]::bigint[]
    FROM slotted GROUP BY span, start, model_name, key, person ORDER BY span, start, model_name, key, person
    ON CONFLICT (organization_id, span, start, model_name, api_key_id, user_id) DO UPDATE SET
        requests = b.requests + EXCLUDED.requests, cache_hits = b.cache_hits + EXCLUDED.cache_hits,
        errors = b.errors + EXCLUDED.errors, input_tokens = b.input_tokens + EXCLUDED.input_tokens,
        output_tokens = b.output_tokens + EXCLUDED.output_tokens,
        cost_usd = b.cost_usd + EXCLUDED.cost_usd, saved_usd = b.saved_usd + EXCLUDED.saved_usd,
        latency_histogram = ARRAY[{slot_sums}]::bigint[]
    RETURNING 1
)
SELECT (SELECT count(*) FROM marked), (SELECT count(*) FROM rolled), (SELECT count(*) FROM buckets)
"""


def usage_fold(*, organization: Organization, batch: int = 5000) -> int:
    """Add the organization's settled ledger rows not yet in the public UsageRollup to it (attempts:
    their tokens and cost, a request if they succeeded; cache hits: a request, a hit and what they
    saved), `batch` rows per statement until none are left. Returns how many rows were folded.
    The same statement adds them to the dashboard's hour and day buckets (UsageBucket: by user too,
    with errors and a latency histogram, and each hour's and day's total), so every reader of
    either table sees each row once.

    The settlement leaves this to a periodic task (llm_usage_fold_all), so that no call waits on
    the rollup's row lock, which every concurrent call of the organization's model and key shares."""
    folded = 0
    statement = _FOLD.format(
        table=UsageRollup._meta.db_table,
        buckets=UsageBucket._meta.db_table,
        slot_counts=", ".join(f"count(*) FILTER (WHERE slot = {slot})" for slot in range(LATENCY_SLOTS)),
        slot_sums=", ".join(
            f"b.latency_histogram[{n}] + EXCLUDED.latency_histogram[{n}]" for n in range(1, LATENCY_SLOTS + 1)
        ),
    )
    parameters: dict[str, Any] = {
        "batch": batch,
        "organization": organization.pk,
        "latency_floors": list(LATENCY_SLOT_FLOORS_MS[1:]),
    }
    with organization_schema(organization):
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(statement, parameters)
                marked, _, _ = cursor.fetchone()
            folded += int(marked)
            if marked < batch:
                return folded


@transaction.atomic
def _soft_limits_reached(*, organization: Organization, window_ids: list[int]) -> None:
    crossed = list(
        BudgetWindow.objects.select_related("budget")
        .filter(id__in=window_ids, soft_notified=False, budget__soft_percent__isnull=False)
        .select_for_update(of=("self",))
    )
    for window in crossed:
        budget = window.budget
        assert budget.soft_percent is not None
        if window.spent_usd * 100 < budget.limit_usd * budget.soft_percent:
            continue
        window.soft_notified = True
        window.save(update_fields=["soft_notified"])
        audit_record(
            organization=organization,
            actor=Principal.system("budgets"),
            action="budget.soft_limit_reached",
            target=budget,
            metadata={
                "period_start": window.period_start.isoformat(),
                "spent_usd": str(window.spent_usd),
                "limit_usd": str(budget.limit_usd),
                "soft_percent": budget.soft_percent,
            },
        )
        if settings.LLM_SOFT_LIMIT_HOOK:
            hook: Callable[[Organization, Budget, BudgetWindow], None] = import_string(settings.LLM_SOFT_LIMIT_HOOK)
            transaction.on_commit(functools.partial(hook, organization, budget, window))


def holds_sweep(*, organization: Organization, now: dt.datetime | None = None) -> int:
    """Settle attempts whose process died, charging their whole reservation. Returns how many."""
    now = now or timezone.now()
    stale = list(
        UsageAttempt.objects.filter(status=AttemptStatus.RESERVED, hold_expires_at__lt=now).order_by("id")[:500]
    )
    swept = _sweep(organization, stale)
    # Holds settled by a process that died before its fold: counted at their amounts until now.
    _holds_fold(organization)
    return swept


def attempts_abandon(*, organization: Organization, request_ids: list[str]) -> int:
    """Settle now, from their reservations, the open attempts of requests whose process is known to
    be dead (a job whose heartbeat stopped), instead of waiting for their holds to expire."""
    stale = list(UsageAttempt.objects.filter(status=AttemptStatus.RESERVED, request_id__in=request_ids).order_by("id"))
    return _sweep(organization, stale)


def _sweep(organization: Organization, stale: list[UsageAttempt]) -> int:
    """Settle the attempts from their reservations (the worst case charged), in one statement."""
    if not stale:
        return 0
    swept = [
        (
            organization,
            attempt,
            Settlement(status=AttemptStatus.SWEPT, cost_usd=attempt.reserved_usd, error_class="abandoned"),
        )
        for attempt in stale
    ]
    return len(_settlements_write(organization, swept))
