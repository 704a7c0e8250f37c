"""What calls cost: the bound a reservation holds before a call, the settlement after it, and the
preview of a call not made yet (a workflow's cost before it runs)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from apps.llm.budgets import Settlement
from apps.llm.models import AttemptStatus
from apps.llm.platform.models import ModelKind
from apps.llm.platform.selectors import PricedModel, catalog
from apps.llm.providers import Usage
from apps.llm.refusals import LlmRefusal
from apps.llm.router import UnknownModel, candidates
from apps.llm.semantic import embedding_model_name
from apps.llm.validation import ChatCall, EmbeddingsCall


@dataclass(frozen=True)
class ChatCostPreview:
    """A chat call's expected cost on the model the router would pick now, and its worst case over
    every model it could fall back to (each with its whole output allowance)."""

    model: str
    expected_usd: Decimal
    expected_input_tokens: int
    expected_output_tokens: int
    worst_usd: Decimal
    worst_model: str
    worst_input_tokens: int
    worst_output_tokens: int


@dataclass(frozen=True)
class EmbeddingCostPreview:
    model: str
    expected_usd: Decimal
    worst_usd: Decimal


def refuse_unpriced(entry: PricedModel) -> None:
    if entry.price is None:
        raise LlmRefusal(
            400, "model_not_priced", f"model {entry.model.name!r} has no price and cannot be used", param="model"
        )


def model_output_allowance(entry: PricedModel, max_tokens: int | None) -> int:
    """The output tokens a call may produce on this model: what it asked for, never over the model's most."""
    return min(max_tokens or entry.model.max_output_tokens, entry.model.max_output_tokens)


def output_allowance(entry: PricedModel, call: ChatCall) -> int:
    return model_output_allowance(entry, call.max_tokens)


def worst_case_cost(entry: PricedModel, call: ChatCall) -> Decimal:
    """What the call can cost on this model at most: every prompt byte a token, every image at the
    model's most per image, and the whole output allowance (which the adapter sends as the limit)."""
    assert entry.price is not None
    prompt = call.prompt_token_bound + call.images * entry.model.max_tokens_per_image
    return entry.price.cost(input_tokens=prompt, cached_input_tokens=0, output_tokens=output_allowance(entry, call))


def embedding_worst_case_cost(entry: PricedModel, call: EmbeddingsCall) -> Decimal:
    """Every input byte a token: no token is shorter than one UTF-8 byte."""
    assert entry.price is not None
    return entry.price.cost(input_tokens=call.input_bytes, cached_input_tokens=0, output_tokens=0)


def success_settlement(entry: PricedModel, usage: Usage, latency_ms: int) -> Settlement:
    """A succeeded attempt's settlement: the provider's reported usage at the model's current price."""
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


def chat_cost_preview(
    *,
    model: str | None,
    policy: str | None,
    min_quality: int,
    max_tokens: int | None,
    expected_input_tokens: int,
    worst_input_tokens: int,
    expected_output_tokens: int,
    routing_prompt_tokens: int,
) -> ChatCostPreview:
    """Price a chat call without making it. Raises LlmRefusal `model_not_found` (404) for an
    unknown model, `no_model_available` (503) when no priced model can serve it."""
    try:
        found = candidates(
            model=model,
            policy=policy,
            min_quality=min_quality,
            prompt_tokens=routing_prompt_tokens,
            output_tokens=max_tokens or expected_output_tokens,
        )
    except UnknownModel as exc:
        raise LlmRefusal(404, "model_not_found", f"unknown model {model!r}", param="model") from exc
    priced = [entry for entry in found if entry.price is not None]
    if not priced:
        raise LlmRefusal(503, "no_model_available", "no priced model can serve this call", retryable=True)
    first = priced[0]
    assert first.price is not None
    expected_out = min(max_tokens or first.model.max_output_tokens, expected_output_tokens)
    expected = first.price.cost(input_tokens=expected_input_tokens, cached_input_tokens=0, output_tokens=expected_out)
    worst, worst_out, worst_model = Decimal(0), 0, first.model.name
    for entry in priced:
        assert entry.price is not None
        out = model_output_allowance(entry, max_tokens)
        cost = entry.price.cost(input_tokens=worst_input_tokens, cached_input_tokens=0, output_tokens=out)
        if cost >= worst:
            worst, worst_out, worst_model = cost, out, entry.model.name
    return ChatCostPreview(
        model=first.model.name,
        expected_usd=expected,
        expected_input_tokens=expected_input_tokens,
        expected_output_tokens=expected_out,
        worst_usd=worst,
        worst_model=worst_model,
        worst_input_tokens=worst_input_tokens,
        worst_output_tokens=worst_out,
    )


def embedding_cost_preview(*, expected_input_tokens: int, worst_input_tokens: int) -> EmbeddingCostPreview:
    """Price embedding a text with the model retrieval and the semantic cache use. Raises
    LlmRefusal `no_embedding_model` (503) when there is none (or it has no price)."""
    name = embedding_model_name()
    entry = catalog().get(name) if name else None
    if name is None or entry is None or entry.price is None or entry.model.kind != ModelKind.EMBEDDING:
        raise LlmRefusal(503, "no_embedding_model", "no embedding model is available", retryable=True)
    return EmbeddingCostPreview(
        model=name,
        expected_usd=entry.price.cost(input_tokens=expected_input_tokens, cached_input_tokens=0, output_tokens=0),
        worst_usd=entry.price.cost(input_tokens=worst_input_tokens, cached_input_tokens=0, output_tokens=0),
    )
