"""Streams and the exact caches: a cached answer is replayed as a stream, and a complete streamed
answer is cached (per organization, never a cut-off one, never in no-content mode)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import openai
from anthropic.types import MessageParam
from django_tenants.utils import schema_context
from openai.types.chat import ChatCompletionMessageParam

from apps.accounts.principals import Principal
from apps.llm.calls import chat_call_parse, chat_stream
from apps.llm.models import AttemptStatus, CachedResponse, UsageAttempt
from apps.llm.services import llm_settings_set
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR
from tests.llm.conftest import _InThisTransaction, gateway_client

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Stream me an answer"}]


def _stream(client: openai.OpenAI, **fields: Any) -> tuple[str, str, Decimal, str | None]:
    """Text, cache header, cost from the usage chunk, finish reason."""
    raw = client.chat.completions.with_raw_response.create(
        model="simulated-mini", messages=HELLO, stream=True, stream_options={"include_usage": True}, **fields
    )
    text, cost, finish = [], Decimal(-1), None
    for chunk in raw.parse():
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
        if chunk.usage is not None:
            cost = Decimal(str((chunk.usage.model_extra or {})["cost_usd"]))
    return "".join(text), raw.headers["x-cognitionos-cache"], cost, finish


def _ledger(organization: Organization) -> list[tuple[str, str]]:
    with schema_context(organization.schema_name):
        return list(UsageAttempt.objects.order_by("id").values_list("status", "cache_layer"))


def test_a_cached_answer_is_replayed_as_a_stream(two_tenants: tuple[Organization, Organization], key_a: str) -> None:
    tenant_a, _ = two_tenants
    client = gateway_client(key_a)
    answer = client.chat.completions.create(model="simulated-mini", messages=HELLO).choices[0].message.content
    text, cache, cost, finish = _stream(client)
    assert (text, cache, cost, finish) == (answer, "l1", Decimal(0), "stop")
    assert _ledger(tenant_a) == [(AttemptStatus.SUCCEEDED, ""), (AttemptStatus.CACHE_HIT, "l1")]


def test_a_complete_streamed_answer_fills_the_cache(two_tenants: tuple[Organization, Organization], key_a: str) -> None:
    tenant_a, _ = two_tenants
    client = gateway_client(key_a)
    text, cache, cost, _ = _stream(client)
    assert cache == "miss" and cost > 0
    with schema_context(tenant_a.schema_name):
        stored = CachedResponse.objects.get()
    assert stored.cost_usd == cost and stored.response["choices"][0]["message"]["content"] == text
    raw = client.chat.completions.with_raw_response.create(model="simulated-mini", messages=HELLO)
    assert raw.headers["x-cognitionos-cache"] == "l1"
    assert raw.parse().choices[0].message.content == text
    assert _stream(client)[:2] == (text, "l1")


def test_streamed_cache_is_per_organization(
    two_tenants: tuple[Organization, Organization], key_a: str, key_b: str
) -> None:
    _, tenant_b = two_tenants
    _stream(gateway_client(key_a))
    assert _stream(gateway_client(key_b))[1] == "miss"
    assert _ledger(tenant_b) == [(AttemptStatus.SUCCEEDED, "")]


def test_cut_off_or_skipped_streams_are_not_cached(tenant: Organization) -> None:
    principal = Principal(kind="api_key", id="1", label="tests")
    for body in (
        {"model": "simulated-mini", "messages": HELLO, "stream": True, "max_tokens": 2},
        {"model": "simulated-mini", "messages": HELLO, "stream": True, "cache": {"skip": True}},
    ):
        for _ in range(2):
            stream = chat_stream(organization=tenant, principal=principal, call=chat_call_parse(body))
            assert stream.cache == "miss"
            list(stream.chunks)
    assert CachedResponse.objects.count() == 0


def test_a_stream_the_client_left_is_not_cached(tenant: Organization) -> None:
    principal = Principal(kind="api_key", id="1", label="tests")
    call = chat_call_parse({"model": "simulated-mini", "messages": HELLO, "stream": True})
    stream = chat_stream(organization=tenant, principal=principal, call=call)
    next(stream.chunks)
    stream.chunks.close()  # type: ignore[attr-defined]  # a generator
    assert CachedResponse.objects.count() == 0


def test_no_content_mode_caches_no_stream(two_tenants: tuple[Organization, Organization], key_a: str) -> None:
    tenant_a, _ = two_tenants
    llm_settings_set(organization=tenant_a, actor=TEST_ACTOR, store_content=False)
    client = gateway_client(key_a)
    assert [_stream(client)[1] for _ in range(2)] == ["miss", "miss"]
    with schema_context(tenant_a.schema_name):
        assert CachedResponse.objects.count() == 0


def test_the_anthropic_endpoint_replays_a_cached_answer_as_its_events(
    two_tenants: tuple[Organization, Organization], key_a: str
) -> None:
    transport = httpx2.WSGITransport(app=_InThisTransaction())
    client = anthropic.Anthropic(
        base_url="http://localhost",
        api_key=key_a,
        max_retries=0,
        http_client=httpx2.Client(transport=transport, base_url="http://localhost"),
    )
    question: list[MessageParam] = [{"role": "user", "content": "Stream me an answer"}]
    first = client.messages.create(model="simulated-mini", max_tokens=1024, messages=question)
    answer = "".join(block.text for block in first.content if block.type == "text")
    raw = client.messages.with_raw_response.create(
        model="simulated-mini", max_tokens=1024, messages=question, stream=True
    )
    assert raw.headers["x-cognitionos-cache"] == "l1"
    text = "".join(
        event.delta.text
        for event in raw.parse()
        if event.type == "content_block_delta" and event.delta.type == "text_delta"
    )
    assert text == answer and answer.startswith("[simulated]")
