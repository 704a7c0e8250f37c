"""The governed chat call, used by the OpenAI- and Anthropic-compatible gateway and (through
apps.llm.calls) by every other app:

parse (validation) -> admit (admission) -> plan (router) -> caches (answers) -> reserve, call, retry,
fall back (attempts) -> settle (pricing, budgets) -> fill caches; a stream is relayed (relay).
Embeddings take the same path without the caches (embeddings).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from django.db import transaction

from apps.accounts.principals import Principal
from apps.llm.admission import call_admit, chat_rate_tokens
from apps.llm.answers import CallCache, hit_record
from apps.llm.attempts import Attempts
from apps.llm.budgets import Spender, attempt_settle, attempt_settle_soon, connection_await
from apps.llm.content import ContentDraft, answer_text, content_draft, prompt_text
from apps.llm.models import CallSource
from apps.llm.outcomes import ChatOutcome, ChatStream
from apps.llm.platform.selectors import PricedModel
from apps.llm.pricing import output_allowance, refuse_unpriced, success_settlement, worst_case_cost
from apps.llm.providers import CallContext, ChatProvider, ProviderError, Reply, StreamChunk
from apps.llm.refusals import LlmRefusal, invalid
from apps.llm.relay import relay, replay
from apps.llm.router import POLICIES, UnknownModel, candidates
from apps.llm.selectors import llm_settings_get
from apps.llm.validation import ChatCall
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization


def model_requested(call: ChatCall) -> str:
    """What the caller asked for, as the ledger records it: the model, or the routing policy."""
    return call.model or (f"policy:{call.policy}" if call.policy else "")


def _content(cache: CallCache, call: ChatCall, answer: dict[str, Any]) -> ContentDraft | None:
    """The call's prompt and answer for the request log, if the organization keeps content."""
    if not cache.settings.store_content:
        return None
    return content_draft(prompt=prompt_text(call.payload), answer=answer_text(answer))


def _chat_attempts(*, organization: Organization, spender: Spender, call: ChatCall, request_id: str) -> Attempts:
    return Attempts(
        organization=organization,
        spender=spender,
        request_id=request_id,
        # The output limit is always sent, so the reservation bounds what the answer can cost.
        payload=lambda entry: {**call.payload, "max_tokens": output_allowance(entry, call)},
        reservation=lambda entry: worst_case_cost(entry, call),
        max_cost_usd=call.max_cost_usd,
        model_requested=model_requested(call),
    )


def _within_settings(organization: Organization, call: ChatCall) -> tuple[ChatCall, frozenset[str]]:
    """The call as the organization's model settings make it, and the models they allow (empty:
    all): a model not allowed is refused before any work; a call naming no model (or "default")
    takes the default policy. The settings come from the per-process cache the call reads anyway."""
    found = llm_settings_get(organization=organization)
    if call.model is None and call.policy is None:
        if not found.default_policy:
            raise invalid(
                f"give a `model`, or a `policy` among {list(POLICIES)} (this organization has no default policy)",
                "model",
                code="model_required",
            )
        call = dataclasses.replace(call, policy=found.default_policy)
    if call.model is not None and found.allowed_models and call.model not in found.allowed_models:
        raise LlmRefusal(
            403,
            "model_not_allowed",
            f"the model {call.model!r} is not allowed in this organization (see its model settings)",
            param="model",
        )
    return call, found.allowed_models


def _plan(call: ChatCall, attempts: Attempts, allowed: frozenset[str] = frozenset()) -> list[PricedModel]:
    """The models to try, in order: the one asked for and its fallbacks, or the policy's choice,
    among the models the organization allows."""
    try:
        found = candidates(
            model=call.model,
            policy=call.policy,
            min_quality=call.min_quality,
            prompt_tokens=call.prompt_token_bound // 4,
            own_providers=frozenset(attempts.own_keys),
            output_tokens=call.max_tokens or 500,
            health_scope=attempts.health_scope,
        )
    except UnknownModel as exc:
        raise LlmRefusal(
            404, "model_not_found", f"the model {exc} does not exist or is not available", param="model"
        ) from exc
    if allowed:
        found = [entry for entry in found if entry.model.name in allowed]
        if not found:
            raise LlmRefusal(403, "model_not_allowed", "no model this organization allows satisfies this policy")
    if call.images:
        if call.model is not None and not found[0].model.accepts_images:
            raise LlmRefusal(
                400, "images_not_supported", f"the model {call.model!r} does not accept images", param="model"
            )
        found = [entry for entry in found if entry.model.accepts_images]
    if not found:
        raise LlmRefusal(503, "no_model_available", "no configured model satisfies this policy", retryable=True)
    refuse_unpriced(found[0])
    return [entry for entry in found if entry.price is not None]


def _admit_and_plan(
    *, organization: Organization, call: ChatCall, attempts: Attempts, allowed: frozenset[str] = frozenset()
) -> list[PricedModel]:
    """Admission (suspension, rate limits), then the plan, as the caller sees it: a call the limits
    refuse is refused for that whatever its model. The plan is made first, so that its first
    deployment's breaker is read in the admission's round trip."""
    try:
        plan, refusal = _plan(call, attempts, allowed), None
    except LlmRefusal as exc:
        plan, refusal = [], exc
    keys = [attempts.breaker_key(entry) for entry in plan[:1]]
    reads = call_admit(
        organization=organization, spender=attempts.spender, tokens=chat_rate_tokens(call), breakers=keys
    )
    if refusal is not None:
        raise refusal
    attempts.breaker_reads = {key: (value,) for key, value in zip(keys, reads, strict=True)}
    return plan


def _complete(provider: ChatProvider, payload: dict[str, Any], context: CallContext) -> Reply:
    return provider.complete(payload, context)


def _open_stream(
    provider: ChatProvider, payload: dict[str, Any], context: CallContext
) -> tuple[StreamChunk, Iterator[StreamChunk]]:
    """Start the provider's stream and wait for its first chunk: a failure before it is retried
    like any other attempt's; after it, the answer is the client's."""
    upstream = provider.stream(payload, context)
    try:
        return next(upstream), upstream
    except StopIteration:
        raise ProviderError("empty stream") from None


def chat_complete(
    *,
    organization: Organization,
    principal: Principal,
    call: ChatCall,
    request_id: str | None = None,
    on_settled: Callable[[ChatOutcome], None] | None = None,
    source: str = CallSource.OTHER,
) -> ChatOutcome:
    """Answer a (non-streaming) chat call for an organization, governed end to end.

    `on_settled` runs in the transaction that settles the successful attempt, so a caller's record
    of the answer (a job's result) commits together with the ledger row, or neither does. Without
    it (the gateway) the answer is returned before its settlement is written (attempt_settle_soon)."""
    call, allowed = _within_settings(organization, call)
    request_id = request_id or uuid.uuid4().hex
    spender = Spender(organization=organization, principal=principal, source=source)
    attempts = _chat_attempts(organization=organization, spender=spender, call=call, request_id=request_id)
    plan = _admit_and_plan(organization=organization, call=call, attempts=attempts, allowed=allowed)
    cache = CallCache(organization=organization, call=call)
    hit = cache.lookup(principal=principal, request_id=request_id)
    if hit is not None:
        outcome = ChatOutcome(
            body=hit.body,
            request_id=request_id,
            model=hit_record(
                spender=spender,
                request_id=request_id,
                hit=hit,
                model_requested=model_requested(call),
                content=_content(cache, call, hit.body),
            ),
            cost_usd=cache.embedding_cost,
            cache=hit.layer,
            simulated=hit.body.get("system_fingerprint") == "simulated",
        )
        if on_settled is not None:
            with transaction.atomic():
                on_settled(outcome)
        return outcome
    answered = attempts.run(plan, _complete)
    entry, reply = answered.entry, answered.result
    latency_ms = answered.latency_ms()
    body = {**reply.body, "model": entry.model.name}
    settlement = dataclasses.replace(
        success_settlement(entry, reply.usage, latency_ms), content=_content(cache, call, body)
    )
    outcome = ChatOutcome(
        body=body,
        request_id=request_id,
        model=entry.model.name,
        cost_usd=settlement.cost_usd + cache.embedding_cost,  # embedding the prompt for L3
        cache="miss",
        simulated=entry.model.is_simulated,
    )
    if on_settled is None:
        attempt_settle_soon(organization=organization, attempt=answered.attempt, settlement=settlement)
    else:
        connection_await()  # before the caller's transaction opens: it takes the pool's short wait
        with transaction.atomic():
            attempt_settle(organization=organization, attempt=answered.attempt, settlement=settlement)
            on_settled(outcome)
    attempts.succeeded(entry, latency_ms, settlement.cost_usd)
    if cache.enabled and reply.finish_reason in ("stop", "tool_calls"):
        cache.fill(model_name=entry.model.name, body=body, cost=settlement.cost_usd)
    return outcome


def chat_stream(
    *,
    organization: Organization,
    principal: Principal,
    call: ChatCall,
    request_id: str | None = None,
    source: str = CallSource.OTHER,
) -> ChatStream:
    """Start a streaming call. Retries and fallbacks happen before the first chunk; the attempt is
    settled when the iterator ends, from the provider's final usage or, if the client went away or
    the stream broke, from the reservation."""
    call, allowed = _within_settings(organization, call)
    request_id = request_id or uuid.uuid4().hex
    spender = Spender(organization=organization, principal=principal, source=source)
    attempts = _chat_attempts(organization=organization, spender=spender, call=call, request_id=request_id)
    plan = _admit_and_plan(organization=organization, call=call, attempts=attempts, allowed=allowed)
    cache = CallCache(organization=organization, call=call, streaming=True)
    hit = cache.lookup(principal=principal, request_id=request_id, semantic=False)
    if hit is not None:
        return ChatStream(
            request_id=request_id,
            model=hit_record(
                spender=spender,
                request_id=request_id,
                hit=hit,
                model_requested=model_requested(call),
                content=_content(cache, call, hit.body),
            ),
            simulated=hit.body.get("system_fingerprint") == "simulated",
            chunks=replay(hit.body, request_id),
            cache=hit.layer,
        )

    def fill(entry: PricedModel, body: dict[str, Any], cost: Decimal) -> None:
        # The relay runs as the response is sent, outside the request's schema.
        with organization_schema(organization):
            cache.fill(model_name=entry.model.name, body=body, cost=cost)

    answered = attempts.run(plan, _open_stream)
    first, upstream = answered.result
    return ChatStream(
        request_id=request_id,
        model=answered.entry.model.name,
        simulated=answered.entry.model.is_simulated,
        chunks=relay(
            attempts=attempts,
            entry=answered.entry,
            attempt=answered.attempt,
            first=first,
            upstream=upstream,
            started=answered.started,
            fill=fill if cache.enabled else None,
            prompt=prompt_text(call.payload) if cache.settings.store_content else None,
        ),
    )
