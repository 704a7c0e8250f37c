"""Which models to try, in order: the one asked for and its fallbacks, or a routing policy."""

from __future__ import annotations

from decimal import Decimal

from apps.llm.platform.models import ModelKind
from apps.llm.platform.selectors import PricedModel, catalog
from apps.llm.providers import provider_configured
from cognitionos.redis import redis_client

POLICIES = ("cheapest", "fastest", "balanced")
_LATENCY_KEY = "llm:latency_ms:{name}"


class UnknownModel(LookupError):
    pass


def usable(entry: PricedModel, own_providers: frozenset[str] = frozenset()) -> bool:
    return entry.price is not None and provider_configured(entry.model, own_providers)


def expected_cost(entry: PricedModel, *, prompt_tokens: int, output_tokens: int) -> Decimal:
    assert entry.price is not None
    return entry.price.cost(input_tokens=prompt_tokens, cached_input_tokens=0, output_tokens=output_tokens)


def observed_latency_ms(names: list[str]) -> dict[str, float]:
    values = redis_client().mget([_LATENCY_KEY.format(name=name) for name in names])
    return {name: float(value) for name, value in zip(names, values, strict=True) if value is not None}


def latency_observe(name: str, latency_ms: float) -> None:
    """Exponentially weighted moving average of a model's latency, shared by every process."""
    key = _LATENCY_KEY.format(name=name)
    client = redis_client()
    previous = client.get(key)
    value = latency_ms if previous is None else 0.8 * float(previous) + 0.2 * latency_ms
    client.set(key, f"{value:.1f}", ex=24 * 3600)


def candidates(
    *,
    model: str | None,
    policy: str | None,
    min_quality: int,
    prompt_tokens: int,
    output_tokens: int,
    own_providers: frozenset[str] = frozenset(),
) -> list[PricedModel]:
    models = catalog()
    if model is not None:
        entry = models.get(model)
        if entry is None or entry.model.kind != ModelKind.CHAT:
            raise UnknownModel(model)
        chain = [entry] + [models[name] for name in entry.model.fallbacks if name in models]
        ordered = [c for c in chain if usable(c, own_providers) or c is entry]
    else:
        pool = [
            e
            for e in models.values()
            if e.model.kind == ModelKind.CHAT and e.model.quality_tier >= min_quality and usable(e, own_providers)
        ]
        costs = {e.model.name: expected_cost(e, prompt_tokens=prompt_tokens, output_tokens=output_tokens) for e in pool}
        latency = observed_latency_ms([e.model.name for e in pool]) if policy != "cheapest" else {}
        unknown = max(latency.values(), default=1000.0) * 2  # untried models go after known ones
        if policy == "cheapest":
            ordered = sorted(pool, key=lambda e: (costs[e.model.name], -e.model.quality_tier))
        elif policy == "fastest":
            ordered = sorted(pool, key=lambda e: latency.get(e.model.name, unknown))
        else:
            ordered = sorted(pool, key=lambda e: float(costs[e.model.name]) * latency.get(e.model.name, unknown))
    return ordered
