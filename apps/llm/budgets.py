"""Reserve before the call, settle after it: budgets that hold under any concurrency.

Before a provider call the worst-case cost is added to `reserved_usd` of every budget window that
applies (organization, user, API key; day and month), each with one conditional UPDATE that a
hard limit can refuse, in one transaction with the attempt's ledger row. After the call the actual
cost moves to `spent_usd` and the hold is released, in one transaction with the settled ledger row
and the public rollup. Row locks taken by the UPDATEs serialize concurrent reservations on the
same window, so spend plus reservations never passes a hard limit.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.module_loading import import_string

from apps.accounts.principals import Principal
from apps.audit.services import audit_record
from apps.llm.models import AttemptStatus, Budget, BudgetHold, BudgetPeriod, BudgetScope, BudgetWindow, UsageAttempt
from apps.llm.platform.models import UsageRollup
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization


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

    @property
    def api_key_id(self) -> int | None:
        return int(self.principal.id) if self.principal.kind == "api_key" and self.principal.id else None

    @property
    def user_id(self) -> int | None:
        return int(self.principal.id) if self.principal.kind in ("user", "operator") and self.principal.id else None


def period_start(period: str, now: dt.datetime) -> dt.date:
    today = now.astimezone(dt.UTC).date()
    return today if period == BudgetPeriod.DAY else today.replace(day=1)


def budgets_for(spender: Spender) -> list[Budget]:
    scopes = Q(scope=BudgetScope.ORGANIZATION)
    if spender.api_key_id is not None:
        scopes |= Q(scope=BudgetScope.KEY, scope_id=str(spender.api_key_id))
    if spender.user_id is not None:
        scopes |= Q(scope=BudgetScope.USER, scope_id=str(spender.user_id))
    return list(Budget.objects.filter(scopes).order_by("id"))


def _windows(budgets: list[Budget], now: dt.datetime) -> dict[int, int]:
    """budget id -> id of its window for the current period, creating the windows that are missing."""
    wanted = {budget.pk: period_start(budget.period, now) for budget in budgets}
    BudgetWindow.objects.bulk_create(
        [BudgetWindow(budget_id=pk, period_start=start) for pk, start in wanted.items()], ignore_conflicts=True
    )
    query = Q()
    for pk, start in wanted.items():
        query |= Q(budget_id=pk, period_start=start)
    return dict(BudgetWindow.objects.filter(query).values_list("budget_id", "id"))


def attempt_reserve(
    *,
    spender: Spender,
    request_id: str,
    attempt: int,
    model_name: str,
    provider: str,
    amount_usd: Decimal,
    max_cost_usd: Decimal | None,
) -> UsageAttempt:
    """Write the attempt's ledger row and hold `amount_usd` on every applicable budget, or refuse."""
    if max_cost_usd is not None and amount_usd > max_cost_usd:
        raise BudgetExceeded(scope="request", period="request", limit_usd=max_cost_usd)
    now = timezone.now()
    with transaction.atomic():
        row = UsageAttempt.objects.create(
            request_id=request_id,
            attempt=attempt,
            status=AttemptStatus.RESERVED,
            hold_expires_at=now + dt.timedelta(seconds=settings.LLM_HOLD_SECONDS),
            principal_kind=spender.principal.kind,
            principal_id=spender.principal.id or "",
            principal_label=spender.principal.label,
            api_key_id=spender.api_key_id,
            user_id=spender.user_id,
            model_name=model_name,
            provider=provider,
            reserved_usd=amount_usd,
        )
        budgets = budgets_for(spender)
        if budgets:
            windows = _windows(budgets, now)
            holds = []
            with connection.cursor() as cursor:
                for budget in budgets:  # in id order: concurrent reservations lock windows in one order
                    window_id = windows[budget.pk]
                    cursor.execute(
                        """
                        UPDATE llm_budgetwindow SET reserved_usd = reserved_usd + %s
                        WHERE id = %s AND (NOT %s OR spent_usd + reserved_usd + %s <= %s)
                        """,
                        [amount_usd, window_id, budget.hard, amount_usd, budget.limit_usd],
                    )
                    if cursor.rowcount != 1:
                        raise BudgetExceeded(scope=budget.scope, period=budget.period, limit_usd=budget.limit_usd)
                    holds.append(BudgetHold(attempt=row, window_id=window_id, amount_usd=amount_usd))
            BudgetHold.objects.bulk_create(holds)
    return row


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


def attempt_settle(*, organization: Organization, attempt: UsageAttempt, settlement: Settlement) -> bool:
    """Record what the attempt cost and release its holds. False if it was already settled."""
    now = timezone.now()
    with organization_schema(organization), transaction.atomic():
        updated = UsageAttempt.objects.filter(pk=attempt.pk, status=AttemptStatus.RESERVED).update(
            status=settlement.status,
            settled_at=now,
            hold_expires_at=None,
            input_tokens=settlement.input_tokens,
            cached_input_tokens=settlement.cached_input_tokens,
            output_tokens=settlement.output_tokens,
            cost_usd=settlement.cost_usd,
            price_version=settlement.price_version,
            latency_ms=settlement.latency_ms,
            error_class=settlement.error_class[:100],
        )
        if not updated:
            return False
        holds = list(BudgetHold.objects.filter(attempt_id=attempt.pk).values_list("window_id", "amount_usd"))
        if holds:
            with connection.cursor() as cursor:
                for window_id, amount in sorted(holds):
                    cursor.execute(
                        "UPDATE llm_budgetwindow SET reserved_usd = reserved_usd - %s, spent_usd = spent_usd + %s "
                        "WHERE id = %s",
                        [amount, settlement.cost_usd, window_id],
                    )
            BudgetHold.objects.filter(attempt_id=attempt.pk).delete()
            _soft_limits_check(organization=organization, window_ids=[w for w, _ in holds])
        rollup_add(
            organization=organization,
            day=now.date(),
            model_name=attempt.model_name,
            api_key_id=attempt.api_key_id,
            requests=1 if settlement.status == AttemptStatus.SUCCEEDED else 0,
            cache_hits=0,
            input_tokens=settlement.input_tokens,
            output_tokens=settlement.output_tokens,
            cost_usd=settlement.cost_usd,
            saved_usd=Decimal(0),
        )
    return True


def cache_hit_record(
    *, spender: Spender, request_id: str, model_name: str, cache_layer: str, saved_usd: Decimal
) -> UsageAttempt:
    """A request served from cache: no provider cost, and the cost it saved."""
    now = timezone.now()
    with transaction.atomic():
        row = UsageAttempt.objects.create(
            request_id=request_id,
            attempt=0,
            status=AttemptStatus.CACHE_HIT,
            settled_at=now,
            principal_kind=spender.principal.kind,
            principal_id=spender.principal.id or "",
            principal_label=spender.principal.label,
            api_key_id=spender.api_key_id,
            user_id=spender.user_id,
            model_name=model_name,
            provider="cache",
            cache_layer=cache_layer,
            saved_usd=saved_usd,
        )
        rollup_add(
            organization=spender.organization,
            day=now.date(),
            model_name=model_name,
            api_key_id=spender.api_key_id,
            requests=1,
            cache_hits=1,
            input_tokens=0,
            output_tokens=0,
            cost_usd=Decimal(0),
            saved_usd=saved_usd,
        )
    return row


def rollup_add(
    *,
    organization: Organization,
    day: dt.date,
    model_name: str,
    api_key_id: int | None,
    requests: int,
    cache_hits: int,
    input_tokens: int,
    output_tokens: int,
    cost_usd: Decimal,
    saved_usd: Decimal,
) -> None:
    table = UsageRollup._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO public.{table} AS r (organization_id, day, model_name, api_key_id, requests, cache_hits,
                input_tokens, output_tokens, cost_usd, saved_usd)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (organization_id, day, model_name, api_key_id) DO UPDATE SET
                requests = r.requests + EXCLUDED.requests, cache_hits = r.cache_hits + EXCLUDED.cache_hits,
                input_tokens = r.input_tokens + EXCLUDED.input_tokens,
                output_tokens = r.output_tokens + EXCLUDED.output_tokens,
                cost_usd = r.cost_usd + EXCLUDED.cost_usd, saved_usd = r.saved_usd + EXCLUDED.saved_usd
            """,  # noqa: S608 - the table name is our model's
            [
                organization.pk,
                day,
                model_name,
                api_key_id or 0,
                requests,
                cache_hits,
                input_tokens,
                output_tokens,
                cost_usd,
                saved_usd,
            ],
        )


def _soft_limits_check(*, organization: Organization, window_ids: list[int]) -> None:
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
    swept = 0
    for attempt in stale:
        swept += attempt_settle(
            organization=organization,
            attempt=attempt,
            settlement=Settlement(status=AttemptStatus.SWEPT, cost_usd=attempt.reserved_usd, error_class="abandoned"),
        )
    return swept
