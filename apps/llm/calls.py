"""The LLM engine's public surface: what every other app (jobs, workflows, knowledge, webhooks,
operations, the portal) may use. Everything else in `apps.llm` is internal; import-linter enforces
it (pyproject.toml).

Every call here is governed end to end for the organization: rate limits, caches, routing with
fallbacks and breakers (the organization's own provider keys included), budget reservation and
settlement, ledger. A call the engine won't or can't answer raises `LlmRefusal`: catch that, never
an HTTP error type (the gateway alone shapes refusals into OpenAI's and Anthropic's bodies).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apps.accounts.principals import Principal
from apps.llm import embeddings, engine
from apps.llm.budgets import attempts_abandon
from apps.llm.models import AttemptStatus, CallSource
from apps.llm.outcomes import ChatOutcome, ChatStream
from apps.llm.platform.models import ModelKind
from apps.llm.platform.selectors import catalog
from apps.llm.pricing import ChatCostPreview, EmbeddingCostPreview, chat_cost_preview, embedding_cost_preview
from apps.llm.providers import provider_sdks_import
from apps.llm.refusals import LlmRefusal
from apps.llm.request_log import (
    REQUEST_LOG_PAGE_SIZE,
    CallDetail,
    LogCursor,
    RequestLogFilters,
    RequestLogPage,
    call_detail,
    request_log_page,
)
from apps.llm.router import POLICIES, usable
from apps.llm.selectors import (
    BudgetStatus,
    ContentPolicy,
    EngineSettings,
    budget_statuses,
    llm_content_policy,
    llm_settings_get,
)
from apps.llm.semantic import embedding_model_name
from apps.llm.services import (
    OWN_KEY_PROVIDERS,
    BudgetInvalid,
    DeploymentUnknown,
    KeyCheck,
    ProviderCredentialInvalid,
    SettingsInvalid,
    budget_delete,
    budget_set,
    deployment_breaker_open,
    deployment_breaker_reset,
    deployment_enabled_set,
    llm_settings_set,
    provider_credential_delete,
    provider_credential_set,
    provider_credential_test,
    provider_own_keys,
)
from apps.llm.traffic import TRAFFIC_BUCKET_S, TrafficBucket, traffic_bucket, traffic_buckets, traffic_key
from apps.llm.usage import DEFAULT_USAGE_RANGE, USAGE_RANGES, UsageSeries, UsageTotals, usage_recorded, usage_series
from apps.llm.validation import ChatCall
from apps.llm.validation import chat_call_parse as _chat_call_parse
from apps.tenants.models import Organization

__all__ = [
    "CHAT_POLICIES",
    "DEFAULT_USAGE_RANGE",
    "OWN_KEY_PROVIDERS",
    "REQUEST_LOG_PAGE_SIZE",
    "TRAFFIC_BUCKET_S",
    "USAGE_RANGES",
    "AttemptStatus",
    "BudgetInvalid",
    "BudgetStatus",
    "CallDetail",
    "CallSource",
    "ChatCall",
    "ChatCostPreview",
    "ChatModelChoice",
    "ChatOutcome",
    "ChatStream",
    "ContentPolicy",
    "DeploymentHealth",
    "DeploymentUnknown",
    "EmbeddingCostPreview",
    "EmbeddingModelChoice",
    "EngineSettings",
    "KeyCheck",
    "LlmRefusal",
    "LogCursor",
    "ProviderCredentialInvalid",
    "RequestLogFilters",
    "RequestLogPage",
    "SettingsInvalid",
    "TrafficBucket",
    "UsageSeries",
    "UsageTotals",
    "attempts_abandon",
    "budget_delete",
    "budget_set",
    "budget_statuses",
    "call_detail",
    "chat_call_parse",
    "chat_complete",
    "chat_cost_preview",
    "chat_model_choices",
    "chat_stream",
    "deployment_breaker_open",
    "deployment_breaker_reset",
    "deployment_enabled_set",
    "deployment_health_list",
    "embedding_cost_preview",
    "embedding_model_choices",
    "embedding_model_dimensions",
    "embedding_model_name",
    "embeddings_create",
    "llm_content_policy",
    "llm_settings_get",
    "llm_settings_set",
    "model_exists",
    "provider_credential_delete",
    "provider_credential_set",
    "provider_credential_test",
    "provider_sdks_import",
    "request_log_page",
    "traffic_bucket",
    "traffic_buckets",
    "traffic_key",
    "usage_recorded",
    "usage_series",
]


def chat_call_parse(body: Any) -> ChatCall:
    """Validate an OpenAI chat-completions body (plus our extensions: policy, min_quality,
    max_cost_usd, cache) against the allowlist. Raises LlmRefusal (400, naming the field) for what
    the engine would refuse, before anything is reserved or written."""
    return _chat_call_parse(body)


def chat_complete(
    *,
    organization: Organization,
    principal: Principal,
    call: ChatCall,
    request_id: str | None = None,
    on_settled: Callable[[ChatOutcome], None] | None = None,
    source: str = CallSource.OTHER,
) -> ChatOutcome:
    """Answer a non-streaming chat call. `source` names the entry point in the request log
    (CallSource: gateway, job, workflow_step, playground...). `request_id` names the call in the
    ledger (its attempts are `<request_id>` numbered 1, 2...); give a stable one to make a retried
    job's spend traceable.

    `on_settled` runs inside the transaction that settles the successful attempt (or records the
    cache hit), so the caller's record of the answer commits together with the ledger row or not
    at all. Raises LlmRefusal."""
    return engine.chat_complete(
        organization=organization,
        principal=principal,
        call=call,
        request_id=request_id,
        on_settled=on_settled,
        source=source,
    )


def chat_stream(
    *,
    organization: Organization,
    principal: Principal,
    call: ChatCall,
    request_id: str | None = None,
    source: str = CallSource.OTHER,
) -> ChatStream:
    """Start a streamed chat call. Admission, routing, retries and fallbacks happen before this
    returns (so a refusal raises LlmRefusal here, never mid-stream); the returned `chunks` iterator
    yields OpenAI `chat.completion.chunk` dicts and settles the attempt when it ends or is closed —
    always close it (a client that went away is charged the reservation)."""
    return engine.chat_stream(
        organization=organization, principal=principal, call=call, request_id=request_id, source=source
    )


def embeddings_create(
    *,
    organization: Organization,
    principal: Principal,
    body: Any,
    request_id: str | None = None,
    source: str = CallSource.OTHER,
    on_settled: Callable[[ChatOutcome], None] | None = None,
) -> ChatOutcome:
    """Embed text: `body` is an OpenAI embeddings request (`model`, `input`, optional `dimensions`,
    `encoding_format`). Governed like a chat call: rate limits, breakers, the organization's own
    key for the provider if it has one, budget reservation, ledger. Raises LlmRefusal.

    `on_settled` runs in the transaction that settles the attempt, so the caller's record of the
    vectors commits together with the ledger row, or neither does (knowledge ingestion)."""
    return embeddings.embeddings_create(
        organization=organization,
        principal=principal,
        body=body,
        request_id=request_id,
        source=source,
        on_settled=on_settled,
    )


def embedding_model_dimensions(name: str) -> int | None:
    """The vector size of the catalog's embedding model `name` (None: no such embedding model)."""
    entry = catalog().get(name)
    if entry is None or entry.model.kind != ModelKind.EMBEDDING:
        return None
    return entry.model.embedding_dimensions


def model_exists(name: str, *, kind: str | None = None) -> bool:
    """Whether the catalog has an active model of this name (of this kind, `chat` or `embedding`,
    if given). Whether it can serve a call right now is the engine's decision at call time."""
    entry = catalog().get(name)
    return entry is not None and (kind is None or entry.model.kind == ModelKind(kind))


# The routing policies a call may name instead of a model (`"model": "cheapest"` is accepted too).
CHAT_POLICIES: tuple[str, ...] = POLICIES


@dataclass(frozen=True)
class ChatModelChoice:
    """A chat model the organization can call now, as a picker shows it."""

    name: str
    provider: str
    simulated: bool
    context_window: int
    max_output_tokens: int
    quality_tier: int


def chat_model_choices(*, organization: Organization) -> list[ChatModelChoice]:
    """The chat models the organization can call now (priced, and the provider configured for the
    platform or by the organization's own key), by name: what /v1/models lists as chat models."""
    own = frozenset(provider_own_keys(organization=organization))
    return [
        ChatModelChoice(
            name=entry.model.name,
            provider=entry.model.provider,
            simulated=entry.model.is_simulated,
            context_window=entry.model.context_window,
            max_output_tokens=entry.model.max_output_tokens,
            quality_tier=entry.model.quality_tier,
        )
        for entry in sorted(catalog().values(), key=lambda e: e.model.name)
        if entry.model.kind == ModelKind.CHAT and usable(entry, own)
    ]


@dataclass(frozen=True)
class EmbeddingModelChoice:
    """An embedding model the organization can call now, as a picker shows it."""

    name: str
    provider: str
    simulated: bool
    embedding_dimensions: int  # the vector's full size (a smaller `dimensions` may be asked for)


def embedding_model_choices(*, organization: Organization) -> list[EmbeddingModelChoice]:
    """The embedding models the organization can call now (priced, and the provider configured for
    the platform or by the organization's own key), by name."""
    own = frozenset(provider_own_keys(organization=organization))
    return [
        EmbeddingModelChoice(
            name=entry.model.name,
            provider=entry.model.provider,
            simulated=entry.model.is_simulated,
            embedding_dimensions=entry.model.embedding_dimensions,
        )
        for entry in sorted(catalog().values(), key=lambda e: e.model.name)
        if entry.model.kind == ModelKind.EMBEDDING and usable(entry, own)
    ]


# --- Deployments, for operators (apps.ops): health and the actions on them -------------------------
# The actions are apps.llm.services' (deployment_breaker_reset, deployment_breaker_open,
# deployment_enabled_set, DeploymentUnknown), re-exported here as the engine's surface.


@dataclass(frozen=True)
class DeploymentHealth:
    """One catalog model as operators see it: routing state and the shared health figures."""

    name: str
    provider: str
    kind: str
    enabled: bool
    priced: bool
    configured: bool  # the platform has the provider's credentials (or it is simulated)
    breaker: str  # closed | open | half_open (the platform's breaker; organizations' own keys have theirs)
    error_rate: float  # decayed moving average of provider-side failures, 0..1
    latency_ms: float | None  # moving average of successful calls; None: no recent call

    @property
    def healthy(self) -> bool:
        from django.conf import settings

        return (
            self.enabled
            and self.priced
            and self.configured
            and self.breaker == "closed"
            and self.error_rate < settings.LLM_ROUTER_UNHEALTHY_ERROR_RATE
        )


def deployment_health_list() -> list[DeploymentHealth]:
    """Every catalog model (disabled ones too) with its breaker, error rate and latency: one query
    for the models, one for their prices, and two Redis round trips, whatever their number."""
    from apps.llm.breaker import OPENED_AT, _state_of, breaker_key
    from apps.llm.platform.models import CatalogModel, ModelPrice
    from apps.llm.providers import provider_configured
    from apps.llm.router import observed
    from cognitionos.redis import redis_client

    models = list(CatalogModel.objects.order_by("provider", "name"))
    priced = set(ModelPrice.objects.filter(model__in=models).values_list("model_id", flat=True).distinct())
    names = [model.name for model in models]
    latency, errors = observed(names)
    pipe = redis_client().pipeline(transaction=False)
    for model in models:
        pipe.hget(breaker_key(model.provider, model.name), OPENED_AT)
    opened = pipe.execute() if models else []
    return [
        DeploymentHealth(
            name=model.name,
            provider=model.provider,
            kind=model.kind,
            enabled=model.is_active,
            priced=model.pk in priced,
            configured=provider_configured(model),
            breaker=_state_of(opened_at),
            error_rate=round(errors.get(model.name, 0.0), 4),
            latency_ms=latency.get(model.name),
        )
        for model, opened_at in zip(models, opened, strict=True)
    ]
