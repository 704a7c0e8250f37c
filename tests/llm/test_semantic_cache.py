"""L3, the semantic cache: opt-in per organization and per request, single-turn temperature-0
requests only, never across organizations, models or anything but the user's words."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.accounts.principals import Principal
from apps.llm.calls import ChatOutcome, chat_call_parse, chat_complete
from apps.llm.models import SEMANTIC_DIMENSIONS, AttemptStatus, SemanticCacheEntry, UsageAttempt
from apps.llm.semantic import semantic_get, semantic_put, semantic_query
from apps.llm.services import llm_settings_set
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR
from tests.llm.conftest import gateway_client

PRINCIPAL = Principal(kind="api_key", id="1", label="tests")
QUESTION = "What is the capital of France?"


def _ask(organization: Organization, text: str, **fields: Any) -> ChatOutcome:
    body: dict[str, Any] = {
        "model": "simulated-mini",
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
        "cache": {"semantic": True},
        **fields,
    }
    body = {name: value for name, value in body.items() if value is not None}
    with schema_context(organization.schema_name):
        return chat_complete(organization=organization, principal=PRINCIPAL, call=chat_call_parse(body))


def _enable(*organizations: Organization, threshold: float | None = None) -> None:
    for organization in organizations:
        llm_settings_set(organization=organization, actor=TEST_ACTOR, semantic_cache=True, semantic_threshold=threshold)


def _ledger(organization: Organization) -> list[UsageAttempt]:
    with schema_context(organization.schema_name):
        return list(UsageAttempt.objects.order_by("id"))


def test_a_prompt_equal_after_normalisation_is_answered_from_l3_through_the_gateway(
    two_tenants: tuple[Organization, Organization], key_a: str
) -> None:
    tenant_a, _ = two_tenants
    _enable(tenant_a)
    client = gateway_client(key_a)
    semantic = {"cache": {"semantic": True}}
    first = client.chat.completions.with_raw_response.create(
        model="simulated-mini",
        messages=[{"role": "user", "content": QUESTION}],
        temperature=0,
        extra_body=semantic,
    )
    assert first.headers["x-cognitionos-cache"] == "miss"
    second = client.chat.completions.with_raw_response.create(
        model="simulated-mini",
        messages=[{"role": "user", "content": "  what is the CAPITAL of\n france?  "}],
        temperature=0,
        extra_body=semantic,
    )
    assert second.headers["x-cognitionos-cache"] == "l3"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content

    rows = _ledger(tenant_a)
    embeddings = [r for r in rows if r.request_id.endswith(".l3")]
    chats = [r for r in rows if not r.request_id.endswith(".l3")]
    assert len(embeddings) == 2 and all(r.status == AttemptStatus.SUCCEEDED and r.cost_usd > 0 for r in embeddings)
    assert {r.model_name for r in embeddings} == {"simulated-embedding"}
    miss, hit = chats
    assert (hit.status, hit.cache_layer, hit.cost_usd, hit.saved_usd) == (
        AttemptStatus.CACHE_HIT,
        "l3",
        Decimal(0),
        miss.cost_usd,
    )
    # The request's cost is what embedding its prompt cost: the answer itself was free.
    assert Decimal(second.headers["x-cognitionos-cost-usd"]) == embeddings[1].cost_usd


def test_a_different_question_or_its_negation_misses(tenant: Organization) -> None:
    _enable(tenant)
    assert _ask(tenant, QUESTION).cache == "miss"
    assert _ask(tenant, "What is not the capital of France?").cache == "miss"
    assert _ask(tenant, "What is the capital of Spain?").cache == "miss"
    assert _ask(tenant, "what is the capital of france?").cache == "l3"


def test_another_organization_never_hits(two_tenants: tuple[Organization, Organization]) -> None:
    tenant_a, tenant_b = two_tenants
    _enable(tenant_a, tenant_b)
    assert _ask(tenant_a, QUESTION).cache == "miss"
    assert _ask(tenant_b, "what is the capital of france?").cache == "miss"
    assert _ask(tenant_a, "what is the capital of france?").cache == "l3"
    with schema_context(tenant_b.schema_name):
        assert SemanticCacheEntry.objects.count() == 1  # B's own answer, in B's schema


def test_another_model_system_prompt_tools_or_format_never_hits(tenant: Organization) -> None:
    _enable(tenant)
    _ask(tenant, QUESTION)
    lowered = "what is the capital of france?"
    assert _ask(tenant, lowered, model="simulated-pro").cache == "miss"
    system = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": lowered}]
    assert _ask(tenant, lowered, messages=system).cache == "miss"
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    assert _ask(tenant, lowered, tools=[tool]).cache == "miss"
    assert _ask(tenant, lowered, response_format={"type": "json_object"}).cache == "miss"
    assert _ask(tenant, lowered, max_tokens=300).cache == "miss"
    assert _ask(tenant, lowered).cache == "l3"
    # The same system prompt (in other words, the same context) does hit.
    shouted = [system[0], {"role": "user", "content": "WHAT is the capital of France?"}]
    assert _ask(tenant, "", messages=shouted).cache == "l3"


def test_l3_needs_the_organization_and_the_request_to_opt_in(tenant: Organization) -> None:
    _ask(tenant, QUESTION)  # the organization has not opted in: nothing is stored in L3
    with schema_context(tenant.schema_name):
        assert SemanticCacheEntry.objects.count() == 0
    assert _ask(tenant, QUESTION.lower()).cache == "miss"
    _enable(tenant)
    _ask(tenant, QUESTION, cache={})  # the request has not opted in
    assert _ask(tenant, QUESTION.upper(), cache={}).cache == "miss"
    assert not [r for r in _ledger(tenant) if r.request_id.endswith(".l3")]  # nothing embedded either


@pytest.mark.parametrize(
    "variant",
    [
        lambda text: {"temperature": 0.7},
        lambda text: {"temperature": None},  # absent
        lambda text: {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": text},
            ]
        },
        lambda text: {"messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": text}]},
        lambda text: {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": text},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    ],
                }
            ]
        },
    ],
    ids=["temperature-0.7", "no-temperature", "multi-turn", "assistant-first", "image"],
)
def test_only_single_turn_text_temperature_zero_requests_use_l3(
    tenant: Organization, variant: Callable[[str], dict[str, Any]]
) -> None:
    _enable(tenant)
    assert _ask(tenant, QUESTION, **variant(QUESTION)).cache == "miss"
    assert _ask(tenant, QUESTION.lower(), **variant(QUESTION.lower())).cache == "miss"
    with schema_context(tenant.schema_name):
        assert SemanticCacheEntry.objects.count() == 0
    assert not [r for r in _ledger(tenant) if r.request_id.endswith(".l3")]


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector]


def _at_similarity(base: list[float], similarity: float, seed: int) -> list[float]:
    """A unit vector whose cosine similarity with the unit vector `base` is `similarity`."""
    noise = [random.Random(seed).gauss(0, 1) for _ in base]
    dot = sum(n * b for n, b in zip(noise, base, strict=True))
    orthogonal = _unit([n - dot * b for n, b in zip(noise, base, strict=True)])
    return [similarity * b + math.sqrt(1 - similarity**2) * o for b, o in zip(base, orthogonal, strict=True)]


def test_the_threshold_decides_and_the_closest_entry_answers(tenant: Organization) -> None:
    generator = random.Random(7)
    base = _unit([generator.gauss(0, 1) for _ in range(SEMANTIC_DIMENSIONS)])
    query = semantic_query(
        model_key="simulated-mini", payload={"messages": [{"role": "user", "content": "q"}], "temperature": 0}
    )
    assert query is not None
    for similarity in (0.93, 0.97):
        semantic_put(
            query=query,
            embedding=_at_similarity(base, similarity, seed=int(similarity * 100)),
            body={"answer": similarity},
            cost=Decimal("0.01"),
            ttl=600,
        )
    assert semantic_get(query=query, embedding=base, threshold=0.99) is None
    hit = semantic_get(query=query, embedding=base, threshold=0.95)
    assert hit is not None and hit.body == {"answer": 0.97} and hit.layer == "l3"
    hit = semantic_get(query=query, embedding=base, threshold=0.9)
    assert hit is not None and hit.body == {"answer": 0.97}  # the closest, not any above the threshold
    SemanticCacheEntry.objects.update(expires_at=timezone.now())
    assert semantic_get(query=query, embedding=base, threshold=0.9) is None  # expired entries never answer


def test_a_lower_threshold_lets_near_prompts_hit(tenant: Organization) -> None:
    """The organization's threshold is the one used (0.8 here, the lowest allowed)."""
    _enable(tenant, threshold=0.8)
    _ask(tenant, QUESTION)
    with schema_context(tenant.schema_name):
        entry = SemanticCacheEntry.objects.get()
        base = [float(v) for v in entry.embedding]
        entry.embedding = _at_similarity(base, 0.85, seed=3)
        entry.save()
    assert _ask(tenant, QUESTION.lower()).cache == "l3"
    llm_settings_set(organization=tenant, actor=TEST_ACTOR, semantic_threshold=0.9)
    assert _ask(tenant, QUESTION.upper()).cache == "miss"
