"""The one LLM call path, used by the OpenAI-compatible gateway and by the job workers:

normalise -> rate limits -> caches (L1, L2, L4, then L3 if asked) -> route -> reserve budget -> call (retries,
fallbacks, breaker) -> settle (ledger, budgets, rollup) -> fill caches.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection, transaction

from apps.accounts.principals import Principal
from apps.llm import caching
from apps.llm.breaker import breaker_allow, breaker_record
from apps.llm.budgets import BudgetExceeded, Settlement, Spender, attempt_reserve, attempt_settle, cache_hit_record
from apps.llm.models import SEMANTIC_DIMENSIONS, AttemptStatus, UsageAttempt
from apps.llm.platform.models import ModelKind
from apps.llm.platform.selectors import PricedModel, catalog
from apps.llm.providers import CallContext, ChatProvider, ProviderError, StreamChunk, Usage, provider_for
from apps.llm.ratelimits import RateLimited, RateLimitUnavailable, rate_limit_take
from apps.llm.refusals import LlmRefusal
from apps.llm.router import UnknownModel, candidates, deployment_observe, usable
from apps.llm.selectors import EngineSettings, llm_settings_get
from apps.llm.semantic import SemanticQuery, embedding_model_name, semantic_get, semantic_put, semantic_query
from apps.llm.services import provider_own_keys
from apps.llm.validation import ChatCall, chat_call_parse, embeddings_call_parse
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization

logger = logging.getLogger(__name__)

__all__ = ["ChatCall", "ChatOutcome", "LlmRefusal", "chat_call_parse", "chat_complete", "chat_stream"]


@dataclass(frozen=True)
class ChatOutcome:
    body: dict[str, Any]
    request_id: str
    model: str
    cost_usd: Decimal
    cache: str  # miss, l1, l2, l3, l4
    simulated: bool


def worst_case_cost(entry: PricedModel, call: ChatCall) -> Decimal:
    """What the call can cost on this model at most: every prompt byte a token, every image at the
    model's most per image, and the whole output allowance (which the adapter sends as the limit)."""
    assert entry.price is not None
    prompt = call.prompt_token_bound + call.images * entry.model.max_tokens_per_image
    return entry.price.cost(input_tokens=prompt, cached_input_tokens=0, output_tokens=output_allowance(entry, call))


def output_allowance(entry: PricedModel, call: ChatCall) -> int:
    return min(call.max_tokens or entry.model.max_output_tokens, entry.model.max_output_tokens)


def _cacheable(call: ChatCall) -> bool:
    return not call.cache_skip and not call.stream


def _release_connection() -> None:
    # The provider call can take minutes: give the pooled connection back instead of holding it idle.
    if not connection.in_atomic_block:
        connection.close()


def _backoff(attempt: int, retry_after: float | None) -> float:
    ceiling = float(settings.LLM_RETRY_MAX_S)
    if retry_after is not None:
        return min(retry_after, ceiling)
    delay: float = min(ceiling, float(settings.LLM_RETRY_BASE_S) * 2 ** (attempt - 1))
    return delay * random.uniform(0.5, 1.0)


def _settlement(entry: PricedModel, usage: Usage, latency_ms: int) -> Settlement:
    assert entry.price is not None
    return Settlement(
        status=AttemptStatus.SUCCEEDED,
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=entry.price.cost(
            input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            output_tokens=usage.output_tokens,
        ).quantize(Decimal("0.00000001")),
        price_version=entry.price.version,
        latency_ms=latency_ms,
    )


def _refuse_unpriced(entry: PricedModel) -> None:
    if entry.price is None:
        raise LlmRefusal(
            400, "model_not_priced", f"model {entry.model.name!r} has no price and cannot be used", param="model"
        )


class _Attempts:
    """Tries the candidates in order, with retries and the breaker; each try is a reserved attempt."""

    def __init__(self, *, organization: Organization, spender: Spender, call: ChatCall, request_id: str) -> None:
        self.organization, self.spender, self.call, self.request_id = organization, spender, call, request_id
        self.own_keys = provider_own_keys(organization=organization)
        # Deployments used with the organization's own key have breakers and health of their own:
        # its bad key or exhausted quota must not take the model away from anyone else.
        self.health_scope = f"org{organization.pk}"
        self.number = 0
        self.last_error: ProviderError | None = None

    def candidates(self) -> list[PricedModel]:
        try:
            found = candidates(
                model=self.call.model,
                policy=self.call.policy,
                min_quality=self.call.min_quality,
                prompt_tokens=self.call.prompt_token_bound // 4,
                own_providers=frozenset(self.own_keys),
                output_tokens=self.call.max_tokens or 500,
                health_scope=self.health_scope,
            )
        except UnknownModel as exc:
            raise LlmRefusal(
                404, "model_not_found", f"the model {exc} does not exist or is not available", param="model"
            ) from exc
        if self.call.images:
            if self.call.model is not None and not found[0].model.accepts_images:
                raise LlmRefusal(
                    400, "images_not_supported", f"the model {self.call.model!r} does not accept images", param="model"
                )
            found = [entry for entry in found if entry.model.accepts_images]
        if not found:
            raise LlmRefusal(503, "no_model_available", "no configured model satisfies this policy", retryable=True)
        _refuse_unpriced(found[0])
        return [entry for entry in found if entry.price is not None]

    def scope(self, entry: PricedModel) -> str:
        """Whose breaker and health figures this deployment's calls feed: everyone's, or the organization's."""
        return self.health_scope if entry.model.provider in self.own_keys else ""

    def allowed(self, entry: PricedModel) -> bool:
        return breaker_allow(entry.model.provider, entry.model.name, scope=self.scope(entry))

    def payload(self, entry: PricedModel) -> dict[str, Any]:
        """The request for this model: the output limit is always sent, so the reservation bounds it."""
        return {**self.call.payload, "max_tokens": output_allowance(entry, self.call)}

    def succeeded(self, entry: PricedModel, latency_ms: int) -> None:
        scope = self.scope(entry)
        breaker_record(entry.model.provider, entry.model.name, success=True, scope=scope)
        deployment_observe(entry.model.name, success=True, latency_ms=latency_ms, scope=scope)

    def begin(self, entry: PricedModel) -> UsageAttempt:
        """Reserve the next attempt (a refusal becomes the 402), then give the connection back for the call."""
        self.number += 1
        try:
            attempt = attempt_reserve(
                spender=self.spender,
                request_id=self.request_id,
                attempt=self.number,
                model_name=entry.model.name,
                provider=entry.model.provider,
                amount_usd=worst_case_cost(entry, self.call),
                max_cost_usd=self.call.max_cost_usd,
                paid_by="organization" if entry.model.provider in self.own_keys else "platform",
            )
        except BudgetExceeded as exc:
            raise _budget_error(exc) from exc
        _release_connection()
        return attempt

    def provider(self, entry: PricedModel) -> ChatProvider:
        return provider_for(entry.model, self.own_keys.get(entry.model.provider))

    def context(self) -> CallContext:
        return CallContext(request_id=self.request_id, attempt=self.number, timeout_s=settings.LLM_PROVIDER_TIMEOUT_S)

    def failed(
        self, entry: PricedModel, attempt: UsageAttempt, error: ProviderError, *, started: float, retry: int
    ) -> bool:
        """Settle a failed attempt; True (after the backoff) if the same model should be tried again."""
        self.last_error = error
        latency_ms = int((time.perf_counter() - started) * 1000)
        attempt_settle(
            organization=self.organization,
            attempt=attempt,
            settlement=Settlement(status=AttemptStatus.FAILED, latency_ms=latency_ms, error_class=error.error_class),
        )
        if error.provider_side:  # a request's own fault never counts against the model
            scope = self.scope(entry)
            breaker_record(entry.model.provider, entry.model.name, success=False, scope=scope)
            deployment_observe(entry.model.name, success=False, scope=scope)
        if not error.retryable or retry >= settings.LLM_MAX_ATTEMPTS:
            return False
        time.sleep(_backoff(retry, error.retry_after))
        return True

    def exhausted(self) -> LlmRefusal:
        error = self.last_error
        detail = f": {error.error_class}" if error else ""
        if error is not None and error.status == 429:
            return LlmRefusal(
                429,
                "provider_rate_limited",
                f"every provider refused the request{detail}",
                retryable=True,
                retry_after_s=int(error.retry_after or 1),
            )
        if error is not None and error.request_fault:
            return LlmRefusal(400, "provider_rejected_request", f"the provider refused the request{detail}")
        return LlmRefusal(502, "provider_unavailable", f"no provider could answer{detail}", retryable=True)


T = TypeVar("T")


def _guarded_call(call: Callable[..., T], *args: Any) -> T:
    """A provider call whose every failure is a ProviderError, so its attempt is always settled."""
    try:
        return call(*args)
    except (ProviderError, StopIteration):
        raise
    except Exception as exc:
        logger.exception("provider adapter failed")
        raise ProviderError(str(exc), retryable=False, error_class=type(exc).__name__) from exc


def _admit(organization: Organization, spender: Spender, tokens: int) -> None:
    if not organization.accepts_requests:
        raise LlmRefusal(403, "organization_suspended", f"the organization is {organization.status}")
    try:
        rate_limit_take(
            organization=organization,
            api_key_id=spender.api_key_id,
            tokens=tokens,
        )
    except RateLimited as exc:
        raise LlmRefusal(
            429,
            "rate_limit_exceeded",
            str(exc),
            retryable=True,
            retry_after_s=exc.retry_after_s,
        ) from exc
    except RateLimitUnavailable as exc:
        raise LlmRefusal(
            503, "rate_limiter_unavailable", "the rate limiter cannot be reached; try again", retryable=True
        ) from exc


def _rate_tokens(call: ChatCall) -> int:
    """What a chat call counts against tokens-per-minute limits: its prompt estimate and output allowance."""
    return call.prompt_token_bound // 4 + call.images * 1_000 + (call.max_tokens or 0)


def _budget_error(exc: BudgetExceeded) -> LlmRefusal:
    return LlmRefusal(402, "budget_exceeded", str(exc))


def _content_ttl(call: ChatCall, engine_settings: EngineSettings) -> int:
    """A cached answer lives for the request's TTL (or the default), never beyond the retention."""
    return min(call.cache_ttl or settings.LLM_CACHE_TTL_S, engine_settings.retention_days * 86400)


@dataclass(frozen=True)
class _Semantic:
    query: SemanticQuery
    embedding: list[float]
    cost_usd: Decimal  # what embedding the prompt cost


def _derived_request_id(request_id: str, suffix: str) -> str:
    derived = f"{request_id}.{suffix}"
    if len(derived) <= 64:
        return derived
    return f"{hashlib.sha256(request_id.encode()).hexdigest()[:60]}.{suffix}"


def _semantic_prepare(
    *, organization: Organization, principal: Principal, call: ChatCall, model_key: str, request_id: str
) -> _Semantic | None:
    """The request's L3 query and its prompt's embedding, made through the governed embeddings path
    (metered, budgeted, in the ledger under `<request id>.l3`); None if L3 can't be used for it."""
    query = semantic_query(model_key=model_key, payload=call.payload)
    model_name = embedding_model_name() if query is not None else None
    if query is None or model_name is None:
        return None
    try:
        outcome = embeddings_create(
            organization=organization,
            principal=principal,
            body={"model": model_name, "input": query.text, "encoding_format": "float"},
            request_id=_derived_request_id(request_id, "l3"),
            admit=False,
        )
    except LlmRefusal as error:
        logger.warning("semantic cache skipped: the prompt could not be embedded (%s)", error.code)
        return None
    data = outcome.body.get("data") or [{}]
    vector = data[0].get("embedding")
    if not isinstance(vector, list) or len(vector) != SEMANTIC_DIMENSIONS:
        logger.warning("semantic cache skipped: %s does not give %d floats", model_name, SEMANTIC_DIMENSIONS)
        return None
    return _Semantic(query=query, embedding=vector, cost_usd=outcome.cost_usd)


def _semantic_lookup(
    *,
    organization: Organization,
    principal: Principal,
    call: ChatCall,
    model_key: str,
    request_id: str,
    threshold: float,
) -> tuple[caching.CachedAnswer | None, _Semantic | None]:
    semantic = _semantic_prepare(
        organization=organization, principal=principal, call=call, model_key=model_key, request_id=request_id
    )
    if semantic is None:
        return None, None
    return semantic_get(query=semantic.query, embedding=semantic.embedding, threshold=threshold), semantic


def chat_complete(
    *,
    organization: Organization,
    principal: Principal,
    call: ChatCall,
    request_id: str | None = None,
    on_settled: Callable[[ChatOutcome], None] | None = None,
) -> ChatOutcome:
    """Answer a (non-streaming) chat call for an organization, governed end to end.

    `on_settled` runs in the transaction that settles the successful attempt, so a caller's record
    of the answer (a job's result) commits together with the ledger row, or neither does."""
    request_id = request_id or uuid.uuid4().hex
    spender = Spender(organization=organization, principal=principal)
    _admit(organization, spender, _rate_tokens(call))
    attempts = _Attempts(organization=organization, spender=spender, call=call, request_id=request_id)
    plan = attempts.candidates()
    model_key = call.model or f"policy:{call.policy}:{call.min_quality}"
    key = caching.cache_key(model=model_key, payload=call.payload)
    schema = organization.schema_name
    engine_settings = llm_settings_get(organization=organization)
    cacheable = _cacheable(call) and engine_settings.store_content
    semantic: _Semantic | None = None
    if cacheable:
        hit = caching.cache_get(schema=schema, key=key)
        if hit is None and call.cache_semantic and engine_settings.semantic_cache:
            hit, semantic = _semantic_lookup(
                organization=organization,
                principal=principal,
                call=call,
                model_key=model_key,
                request_id=request_id,
                threshold=engine_settings.semantic_threshold,
            )
        if hit is not None:
            cache_hit_record(
                spender=spender,
                request_id=request_id,
                model_name=str(hit.body.get("model", "")),
                cache_layer=hit.layer,
                saved_usd=hit.cost_usd,
            )
            outcome = ChatOutcome(
                body=hit.body,
                request_id=request_id,
                model=str(hit.body.get("model", "")),
                cost_usd=semantic.cost_usd if semantic is not None else Decimal(0),
                cache=hit.layer,
                simulated=hit.body.get("system_fingerprint") == "simulated",
            )
            if on_settled is not None:
                with transaction.atomic():
                    on_settled(outcome)
            return outcome
    extra_cost = semantic.cost_usd if semantic is not None else Decimal(0)  # embedding the prompt for L3
    for entry in plan:
        if not attempts.allowed(entry):
            continue
        provider = attempts.provider(entry)
        for retry in range(1, settings.LLM_MAX_ATTEMPTS + 1):
            attempt = attempts.begin(entry)
            started = time.perf_counter()
            try:
                reply = _guarded_call(provider.complete, attempts.payload(entry), attempts.context())
            except ProviderError as error:
                if attempts.failed(entry, attempt, error, started=started, retry=retry):
                    continue
                break
            latency_ms = int((time.perf_counter() - started) * 1000)
            settlement = _settlement(entry, reply.usage, latency_ms)
            body = {**reply.body, "model": entry.model.name}
            outcome = ChatOutcome(
                body=body,
                request_id=request_id,
                model=entry.model.name,
                cost_usd=settlement.cost_usd + extra_cost,
                cache="miss",
                simulated=entry.model.is_simulated,
            )
            with transaction.atomic() if on_settled is not None else contextlib.nullcontext():
                attempt_settle(organization=organization, attempt=attempt, settlement=settlement)
                if on_settled is not None:
                    on_settled(outcome)
            attempts.succeeded(entry, latency_ms)
            if cacheable and reply.finish_reason in ("stop", "tool_calls"):
                ttl = _content_ttl(call, engine_settings)
                caching.cache_put(
                    schema=schema, key=key, model_name=entry.model.name, body=body, cost=settlement.cost_usd, ttl=ttl
                )
                if semantic is not None:
                    semantic_put(
                        query=semantic.query, embedding=semantic.embedding, body=body, cost=settlement.cost_usd, ttl=ttl
                    )
            return outcome
    raise attempts.exhausted()


@dataclass
class ChatStream:
    """A started stream: its chunks (OpenAI `chat.completion.chunk` dicts), then the cost."""

    request_id: str
    model: str
    simulated: bool
    chunks: Iterator[dict[str, Any]]
    cache: str = "miss"  # or the exact layer (l1, l2, l4) whose answer is replayed as a stream


def chat_stream(
    *, organization: Organization, principal: Principal, call: ChatCall, request_id: str | None = None
) -> ChatStream:
    """Start a streaming call. Retries and fallbacks happen before the first chunk; the attempt is
    settled when the iterator ends, from the provider's final usage or, if the client went away or
    the stream broke, from the reservation."""
    request_id = request_id or uuid.uuid4().hex
    spender = Spender(organization=organization, principal=principal)
    _admit(organization, spender, _rate_tokens(call))
    attempts = _Attempts(organization=organization, spender=spender, call=call, request_id=request_id)
    plan = attempts.candidates()
    engine_settings = llm_settings_get(organization=organization)
    key = caching.cache_key(model=call.model or f"policy:{call.policy}:{call.min_quality}", payload=call.payload)
    cacheable = not call.cache_skip and engine_settings.store_content
    if cacheable:
        hit = caching.cache_get(schema=organization.schema_name, key=key)
        if hit is not None:
            model_name = str(hit.body.get("model", ""))
            cache_hit_record(
                spender=spender,
                request_id=request_id,
                model_name=model_name,
                cache_layer=hit.layer,
                saved_usd=hit.cost_usd,
            )
            return ChatStream(
                request_id=request_id,
                model=model_name,
                simulated=hit.body.get("system_fingerprint") == "simulated",
                chunks=_replay(hit.body, request_id),
                cache=hit.layer,
            )

    def fill(entry: PricedModel, body: dict[str, Any], cost: Decimal) -> None:
        with organization_schema(organization):
            caching.cache_put(
                schema=organization.schema_name,
                key=key,
                model_name=entry.model.name,
                body=body,
                cost=cost,
                ttl=_content_ttl(call, engine_settings),
            )

    for entry in plan:
        if not attempts.allowed(entry):
            continue
        provider = attempts.provider(entry)
        for retry in range(1, settings.LLM_MAX_ATTEMPTS + 1):
            attempt = attempts.begin(entry)
            started = time.perf_counter()
            upstream = provider.stream(attempts.payload(entry), attempts.context())
            try:
                first = _guarded_call(next, upstream)
            except (ProviderError, StopIteration) as error:
                failure = error if isinstance(error, ProviderError) else ProviderError("empty stream")
                if attempts.failed(entry, attempt, failure, started=started, retry=retry):
                    continue
                break
            return ChatStream(
                request_id=request_id,
                model=entry.model.name,
                simulated=entry.model.is_simulated,
                chunks=_relay(
                    attempts=attempts,
                    entry=entry,
                    attempt=attempt,
                    first=first,
                    upstream=upstream,
                    started=started,
                    fill=fill if cacheable else None,
                ),
            )
    raise attempts.exhausted()


def _replay(body: dict[str, Any], request_id: str) -> Iterator[dict[str, Any]]:
    """A cached chat completion as the chunks a provider would have streamed, then the usage chunk
    (the answer's tokens, at no cost)."""
    base = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": body.get("created", int(time.time())),
        "model": body.get("model"),
    }
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": ""})
    if message.get("content"):
        yield chunk({"content": message["content"]})
    if message.get("tool_calls"):
        yield chunk({"tool_calls": [{**call, "index": i} for i, call in enumerate(message["tool_calls"])]})
    yield chunk({}, choice.get("finish_reason") or "stop")
    usage = body.get("usage") or {}
    yield {
        **base,
        "choices": [],
        "usage": {
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0),
            "total_tokens": usage.get("total_tokens", 0),
            "cost_usd": "0",
        },
    }


class _Transcript:
    """A streamed answer put back together as a chat completion, for the cache: only a text answer
    that finished with `stop` (tool-call deltas are not reassembled)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish: str | None = None
        self.cacheable = True
        self.first: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        self.first = self.first or chunk
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("tool_calls") or delta.get("function_call") or choice.get("index", 0) != 0:
                self.cacheable = False
            if isinstance(delta.get("content"), str):
                self.parts.append(delta["content"])
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]

    def completion(self, entry: PricedModel, usage: Usage) -> dict[str, Any] | None:
        if not self.cacheable or self.finish != "stop" or self.first is None:
            return None
        return {
            "id": self.first.get("id"),
            "object": "chat.completion",
            "created": self.first.get("created", int(time.time())),
            "model": entry.model.name,
            **({"system_fingerprint": "simulated"} if entry.model.is_simulated else {}),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(self.parts)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            },
        }


def _relay(
    *,
    attempts: _Attempts,
    entry: PricedModel,
    attempt: UsageAttempt,
    first: StreamChunk,
    upstream: Iterator[StreamChunk],
    started: float,
    fill: Callable[[PricedModel, dict[str, Any], Decimal], None] | None = None,
) -> Iterator[dict[str, Any]]:
    organization = attempts.organization
    usage: Usage | None = None
    completed = False
    transcript = _Transcript() if fill is not None else None
    try:
        for item in _chain(first, upstream):
            if item.usage is not None:
                usage = item.usage
            if item.chunk is not None:
                if transcript is not None:
                    transcript.add(item.chunk)
                yield {**item.chunk, "model": entry.model.name}
        completed = True
    except ProviderError as error:
        attempt_settle(
            organization=organization,
            attempt=attempt,
            settlement=Settlement(
                status=AttemptStatus.FAILED,
                cost_usd=attempt.reserved_usd,
                error_class=f"stream_broken:{error.error_class}",
            ),
        )
        if error.provider_side:
            scope = attempts.scope(entry)
            breaker_record(entry.model.provider, entry.model.name, success=False, scope=scope)
            deployment_observe(entry.model.name, success=False, scope=scope)
        return
    finally:
        if not completed or usage is None:
            # The client went away (GeneratorExit) or the provider never reported usage: what the
            # provider did is unknown, so the attempt is charged its reservation, never nothing.
            attempt_settle(
                organization=organization,
                attempt=attempt,
                settlement=Settlement(
                    status=AttemptStatus.FAILED if not completed else AttemptStatus.SUCCEEDED,
                    cost_usd=attempt.reserved_usd,
                    error_class="" if completed else "client_disconnected",
                ),
            )
    if usage is None:
        return
    latency_ms = int((time.perf_counter() - started) * 1000)
    settlement = _settlement(entry, usage, latency_ms)
    attempt_settle(organization=organization, attempt=attempt, settlement=settlement)
    attempts.succeeded(entry, latency_ms)
    body = transcript.completion(entry, usage) if transcript is not None else None
    if fill is not None and body is not None:
        fill(entry, body, settlement.cost_usd)
    yield {
        "id": f"chatcmpl-{attempt.request_id}",
        "object": "chat.completion.chunk",
        "model": entry.model.name,
        "choices": [],
        "usage": {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "cost_usd": str(settlement.cost_usd),
        },
    }


def _chain(first: StreamChunk, rest: Iterator[StreamChunk]) -> Iterator[StreamChunk]:
    yield first
    yield from rest


def embeddings_create(
    *, organization: Organization, principal: Principal, body: Any, request_id: str | None = None, admit: bool = True
) -> ChatOutcome:
    """Embed text through the governed path: rate limits, budget reservation, ledger. `admit=False`
    for an embedding made on behalf of a call that was already admitted (the semantic cache)."""
    models = catalog()

    def dimensions_of(name: str) -> int | None:
        found = models.get(name)
        if found is None or found.model.kind != ModelKind.EMBEDDING or not usable(found):
            return None
        return found.model.embedding_dimensions

    call = embeddings_call_parse(body, max_dimensions=dimensions_of)
    entry = models[call.model]
    _refuse_unpriced(entry)
    assert entry.price is not None
    request_id = request_id or uuid.uuid4().hex
    spender = Spender(organization=organization, principal=principal)
    byte_bound = call.input_bytes  # no token is shorter than one UTF-8 byte
    if admit:
        _admit(organization, spender, byte_bound // 4)
    payload = call.payload()
    amount = entry.price.cost(input_tokens=byte_bound, cached_input_tokens=0, output_tokens=0)
    provider = provider_for(entry.model)
    for retry in range(1, settings.LLM_MAX_ATTEMPTS + 1):
        try:
            attempt = attempt_reserve(
                spender=spender,
                request_id=request_id,
                attempt=retry,
                model_name=entry.model.name,
                provider=entry.model.provider,
                amount_usd=amount,
                max_cost_usd=None,
            )
        except BudgetExceeded as exc:
            raise _budget_error(exc) from exc
        _release_connection()
        started = time.perf_counter()
        context = CallContext(request_id=request_id, attempt=retry, timeout_s=settings.LLM_PROVIDER_TIMEOUT_S)
        try:
            reply = _guarded_call(provider.embed, payload, context)  # type: ignore[union-attr]
        except ProviderError as error:
            attempt_settle(
                organization=organization,
                attempt=attempt,
                settlement=Settlement(
                    status=AttemptStatus.FAILED,
                    error_class=error.error_class,
                    latency_ms=int((time.perf_counter() - started) * 1000),
                ),
            )
            if not error.retryable or retry == settings.LLM_MAX_ATTEMPTS:
                raise LlmRefusal(
                    502, "provider_unavailable", f"no provider could answer: {error.error_class}", retryable=True
                ) from error
            time.sleep(_backoff(retry, error.retry_after))
            continue
        settlement = _settlement(entry, reply.usage, int((time.perf_counter() - started) * 1000))
        attempt_settle(organization=organization, attempt=attempt, settlement=settlement)
        return ChatOutcome(
            body={**reply.body, "model": entry.model.name},
            request_id=request_id,
            model=entry.model.name,
            cost_usd=settlement.cost_usd,
            cache="miss",
            simulated=entry.model.is_simulated,
        )
    raise AssertionError("unreachable")
