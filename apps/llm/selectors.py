"""Reads of the LLM engine that other apps (and the engine's hot path) use."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from dataclasses import dataclass
from decimal import Decimal

from django.utils import timezone
from django_tenants.utils import schema_context

from apps.llm.budgets import period_start
from apps.llm.models import Budget, BudgetPeriod, BudgetWindow, LlmSettings
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization

# Every call reads the settings; a change reaches every process within this many seconds.
SETTINGS_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class EngineSettings:
    semantic_cache: bool
    semantic_threshold: float
    store_content: bool
    retention_days: int
    # Empty: every model is allowed. A frozenset: the engine's check is one lookup per call.
    allowed_models: frozenset[str] = frozenset()
    default_policy: str = ""
    # ":<hash>" of the allowed models ("" when all are): computed once per settings read, for keys.
    allowed_digest: str = ""
    # Changes with every change of the settings (it is the row's `updated_at`). Cached answers are
    # tagged with the generation they were stored under, and an answer of another generation is
    # never served: a policy change reaches every process's L1 with this cache, no Redis round trip.
    content_generation: str = ""


@dataclass(frozen=True)
class ContentPolicy:
    """What the organization lets us keep: with `store_content` off, only counts and costs are
    stored (no prompts, answers or results); otherwise content is deleted after `retention_days`."""

    store_content: bool
    retention_days: int


_DEFAULTS = LlmSettings()
DEFAULT_SETTINGS = EngineSettings(
    semantic_cache=_DEFAULTS.semantic_cache,
    semantic_threshold=_DEFAULTS.semantic_threshold,
    store_content=_DEFAULTS.store_content,
    retention_days=_DEFAULTS.retention_days,
)

_cache: dict[str, tuple[float, EngineSettings]] = {}
_lock = threading.Lock()


def _allowed_digest(models: list[str]) -> str:
    if not models:
        return ""
    return ":" + hashlib.sha256("\n".join(sorted(models)).encode()).hexdigest()[:16]


def _settings_read() -> EngineSettings:
    """The settings row of the schema the connection is on."""
    row = LlmSettings.objects.filter(pk=1).first()
    if row is None:
        return DEFAULT_SETTINGS
    return EngineSettings(
        semantic_cache=row.semantic_cache,
        semantic_threshold=row.semantic_threshold,
        store_content=row.store_content,
        retention_days=row.retention_days,
        allowed_models=frozenset(row.allowed_models),
        default_policy=row.default_policy,
        allowed_digest=_allowed_digest(row.allowed_models),
        content_generation=row.updated_at.isoformat(),
    )


def _settings_cached(schema: str, now: float) -> EngineSettings | None:
    cached = _cache.get(schema)
    return cached[1] if cached is not None and cached[0] > now else None


def _settings_keep(schema: str, now: float, found: EngineSettings) -> EngineSettings:
    with _lock:
        _cache[schema] = (now + SETTINGS_CACHE_SECONDS, found)
    return found


def llm_settings_get(*, organization: Organization) -> EngineSettings:
    """The organization's engine settings (defaults until it changes one), kept per process briefly."""
    now = time.monotonic()
    cached = _settings_cached(organization.schema_name, now)
    if cached is not None:
        return cached
    with organization_schema(organization):
        found = _settings_read()
    return _settings_keep(organization.schema_name, now, found)


def llm_settings_of_schema(*, schema: str) -> EngineSettings:
    """The same, for code that knows only the organization's schema (the answer caches): from the
    same per-process cache, which the engine has just filled for this call."""
    now = time.monotonic()
    cached = _settings_cached(schema, now)
    if cached is not None:
        return cached
    if tenant_connection().schema_name == schema:
        found = _settings_read()
    else:
        with schema_context(schema):
            found = _settings_read()
    return _settings_keep(schema, now, found)


def llm_settings_forget() -> None:
    with _lock:
        _cache.clear()


def llm_content_policy(*, organization: Organization) -> ContentPolicy:
    """How long the organization's prompts, answers and job results may be kept, if at all."""
    found = llm_settings_get(organization=organization)
    return ContentPolicy(store_content=found.store_content, retention_days=found.retention_days)


@dataclass(frozen=True)
class BudgetStatus:
    """A budget and its current period: settled spend, open reservations, what is left."""

    budget: Budget
    period_start: dt.date
    spent_usd: Decimal
    reserved_usd: Decimal

    @property
    def remaining_usd(self) -> Decimal:
        return max(Decimal(0), self.budget.limit_usd - self.spent_usd - self.reserved_usd)


def budget_statuses(*, now: dt.datetime | None = None) -> list[BudgetStatus]:
    """The current organization's budgets with their current period's spend (one query for all)."""
    now = now or timezone.now()
    budgets = list(Budget.objects.order_by("scope", "scope_id", "period"))
    starts = {period: period_start(period, now) for period in BudgetPeriod.values}
    windows = {
        (window.budget_id, window.period_start): window
        for window in BudgetWindow.objects.filter(budget__in=budgets, period_start__in=set(starts.values()))
    }
    statuses = []
    for budget in budgets:
        window = windows.get((budget.pk, starts[budget.period]))
        statuses.append(
            BudgetStatus(
                budget=budget,
                period_start=starts[budget.period],
                spent_usd=window.spent_usd if window else Decimal(0),
                reserved_usd=window.reserved_usd if window else Decimal(0),
            )
        )
    return statuses
