"""The engine against real HTTP providers: the openai and anthropic SDKs talking to a fake server."""

from __future__ import annotations

import time
from typing import Any

from django_tenants.utils import schema_context
from openai.types.chat import ChatCompletionMessageParam

from apps.llm.models import AttemptStatus, UsageAttempt
from apps.tenants.models import Organization
from tests.llm.conftest import gateway_client
from tests.support.fake_provider import FakeProvider

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]


def _ledger(organization: Organization) -> list[tuple[str, int, str, str]]:
    with schema_context(organization.schema_name):
        return list(UsageAttempt.objects.order_by("id").values_list("request_id", "attempt", "model_name", "status"))


def _ledger_matches_the_provider_log(organization: Organization, fake: FakeProvider) -> None:
    """Every call the provider received has exactly one ledger row, and no row lacks a call."""
    served = sorted((call.request_id, int(call.attempt or 0)) for call in fake.calls)
    recorded = sorted(
        (request_id, attempt)
        for request_id, attempt, _, status in _ledger(organization)
        if status != AttemptStatus.CACHE_HIT
    )
    assert served == recorded


def test_openai_model_through_the_openai_sdk(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider
) -> None:
    raw = gateway_client(key_a).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
    completion = raw.parse()
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == "Simulated answer to: Hello there"
    assert "x-cognitionos-simulated" not in raw.headers
    (call,) = fake_provider.calls
    assert (call.path, call.model, call.request_id, call.attempt) == (
        "/v1/chat/completions",
        "gpt-4o-mini",
        raw.headers["x-cognitionos-request-id"],
        "1",
    )
    (row,) = _ledger(two_tenants[0])
    assert row[2:] == ("gpt-4o-mini", AttemptStatus.SUCCEEDED)


def test_anthropic_model_answers_in_openai_shape_streaming_too(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider
) -> None:
    client = gateway_client(key_a)
    completion = client.chat.completions.create(
        model="claude-haiku-4-5", messages=[{"role": "system", "content": "Be brief."}, *HELLO]
    )
    assert completion.choices[0].message.content == "Simulated answer to: Hello there"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    stream = client.chat.completions.create(
        model="claude-haiku-4-5", messages=HELLO, stream=True, extra_body={"cache": {"skip": True}}
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Simulated answer to: Hello there"
    assert [call.path for call in fake_provider.calls] == ["/v1/messages", "/v1/messages"]
    assert [row[3] for row in _ledger(two_tenants[0])] == [AttemptStatus.SUCCEEDED] * 2


def test_provider_faults_are_retried_as_separate_attempts(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider
) -> None:
    fake_provider.fail_next(2, status=500)
    completion = gateway_client(key_a).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert completion.model == "gpt-4o-mini"
    statuses = [(attempt, status) for _, attempt, _, status in _ledger(two_tenants[0])]
    assert statuses == [(1, AttemptStatus.FAILED), (2, AttemptStatus.FAILED), (3, AttemptStatus.SUCCEEDED)]
    _ledger_matches_the_provider_log(two_tenants[0], fake_provider)


def test_retry_after_is_honoured(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider
) -> None:
    fake_provider.fail_next(1, status=429, retry_after=0.4)
    started = time.monotonic()
    gateway_client(key_a).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert time.monotonic() - started >= 0.4
    assert [call.status for call in fake_provider.calls] == [429, 200]


def test_a_failing_model_falls_back_along_its_chain_and_trips_its_breaker(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.LLM_BREAKER_FAILURES = 3
    fake_provider.fail_models({"gpt-4o-mini"})
    client = gateway_client(key_a)
    first = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, extra_body={"cache": {"skip": True}})
    assert first.model == "claude-haiku-4-5"  # gpt-4o-mini's fallback
    assert [call.model for call in fake_provider.calls] == ["gpt-4o-mini"] * 3 + ["claude-haiku-4-5"]
    # The breaker is open now: the next request goes straight to the fallback.
    second = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, extra_body={"cache": {"skip": True}})
    assert second.model == "claude-haiku-4-5"
    assert [call.model for call in fake_provider.calls][4:] == ["claude-haiku-4-5"]
    _ledger_matches_the_provider_log(two_tenants[0], fake_provider)


def test_client_errors_are_not_retried(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider
) -> None:
    fake_provider.fail_next(1, status=400, error_type="invalid_request_error")
    client = gateway_client(key_a)
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert completion.model == "claude-haiku-4-5"  # no second try of the same model, straight to the fallback
    assert [call.status for call in fake_provider.calls] == [400, 200]


def test_a_tool_loop_reaches_an_anthropic_model_with_its_tool_turns(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider
) -> None:
    tools: list[Any] = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
    messages: list[Any] = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    completion = gateway_client(key_a).chat.completions.create(
        model="claude-haiku-4-5", messages=messages, tools=tools, tool_choice="auto"
    )
    # The conversation ends with the tool's result, so the model answers in text instead of calling again.
    assert completion.choices[0].finish_reason == "stop"
    sent = fake_provider.calls[-1].body
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}}],
    }
    assert sent["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}],
    }
    assert sent["tool_choice"] == {"type": "auto"}
