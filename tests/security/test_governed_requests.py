"""Issue 9, items 1-4: what reaches a provider is what was priced, the reservation bounds the cost,
one organization's bad requests can't take a model from another, and absurd parameters are refused
before any work. Driven through HTTP (the real openai and anthropic SDKs against our WSGI app), with
the fake provider on 127.0.0.1 recording exactly what it receives."""

from __future__ import annotations

import json
import logging
import time
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from django.test import Client
from django_tenants.utils import schema_context

from apps.billing.models import PlanVersion
from apps.billing.selectors import entitlement_cache_forget
from apps.llm import metrics
from apps.llm.breaker import OPEN, breaker_state
from apps.llm.models import AttemptStatus, UsageAttempt
from apps.llm.services import provider_credential_set, provider_own_keys_forget
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR
from tests.llm.conftest import _InThisTransaction, gateway_client
from tests.support.fake_provider import FakeProvider

HELLO = [{"role": "user", "content": "Hello there"}]
PNG = "data:image/png;base64,iVBORw0KGgo="


def _post(key: str, path: str, body: Any) -> Any:
    return Client().post(
        path,
        data=body if isinstance(body, str | bytes) else json.dumps(body),
        content_type="application/json",
        HTTP_HOST="localhost",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


def _attempts(organization: Organization) -> list[UsageAttempt]:
    with schema_context(organization.schema_name):
        return list(UsageAttempt.objects.order_by("id"))


# --- 1. The priced request is the request sent ------------------------------------------------


def test_extra_body_cannot_change_the_model_or_the_limits_after_pricing(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider
) -> None:
    client = gateway_client(key_a)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=HELLO,  # type: ignore[arg-type]
            max_tokens=1,
            extra_body={"model": "gpt-5", "n": 8, "max_completion_tokens": 100000},
        )
    error = refused.value.body  # the SDK unwraps {"error": ...}
    assert isinstance(error, dict)
    assert (error["code"], error["type"]) == ("unsupported_parameter", "invalid_request_error")
    assert error["param"] == "n"  # the SDK merged extra_body into the body, over `model` too
    assert fake_provider.calls == []
    assert _attempts(two_tenants[0]) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("extra_body", {"model": "gpt-5"}),
        ("extra_headers", {"x-evil": "1"}),
        ("extra_query", {"a": "b"}),
        ("service_tier", "priority"),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
        ("web_search_options", {}),
        ("prediction", {"type": "content", "content": "x"}),
        ("store", True),
        ("made_up_field", 1),
    ],
)
def test_unknown_and_unpriceable_fields_are_refused_by_name(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider, field: str, value: Any
) -> None:
    response = _post(key_a, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO, field: value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == ("unsupported_parameter", field, "invalid_request_error")
    assert field in error["message"]
    assert fake_provider.calls == []


def test_the_provider_receives_exactly_the_allowlisted_fields_and_the_priced_limit(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider
) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": HELLO,
        "temperature": 0.2,
        "seed": 3,
        "user": "u-1",
        "max_tokens": 40,
        "policy": "cheapest",
        "cache": {"skip": True},
        "max_cost_usd": 1,
    }
    assert _post(key_a, "/v1/chat/completions", body).status_code == 200
    (call,) = fake_provider.calls
    assert call.body == {
        "model": "gpt-4o-mini",
        "messages": HELLO,
        "temperature": 0.2,
        "seed": 3,
        "user": "u-1",
        "max_completion_tokens": 40,
        "stream": False,
    }
    # Without a limit from the client, the model's whole allowance is sent: the one that was priced.
    assert _post(key_a, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO}).status_code == 200
    assert fake_provider.calls[-1].body["max_completion_tokens"] == 16_384


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "user", "content": "hi", "audio": {"id": "a1"}}, "messages[0].audio"),
        ({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}, "messages[0].content[0].type"),
        ({"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}, "messages[0].content[0].type"),
    ],
)
def test_message_fields_and_parts_that_cant_be_priced_are_refused(
    two_tenants: tuple[Organization, Organization],
    key_a: str,
    fake_provider: FakeProvider,
    message: dict[str, Any],
    param: str,
) -> None:
    response = _post(key_a, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [message]})
    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == ("unsupported_parameter", param)
    assert fake_provider.calls == []


def test_anthropic_endpoint_refuses_unknown_fields_in_anthropics_shape(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider
) -> None:
    client = anthropic.Anthropic(
        api_key=key_a,
        base_url="http://localhost",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.WSGITransport(app=_InThisTransaction())),
    )
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"model": "claude-opus-4-1", "top_k": 5},
        )
    assert refused.value.body["type"] == "error"  # type: ignore[index]
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "top_k" in refused.value.body["error"]["message"]  # type: ignore[index]
    assert fake_provider.calls == []


def test_embeddings_forward_only_their_fields(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider
) -> None:
    refused = _post(key_a, "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x", "extra_body": {}})
    assert (refused.status_code, refused.json()["error"]["param"]) == (400, "extra_body")
    assert _post(key_a, "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}).status_code == 200
    assert set(fake_provider.calls[-1].body) == {"model", "input", "encoding_format"}


# --- 2. The reservation is an upper bound --------------------------------------------------------


def test_images_are_reserved_at_the_models_most_per_image(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider
) -> None:
    text_only = _post(key_a, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 5})
    with_images = _post(
        key_a,
        "/v1/chat/completions",
        {
            "model": "gpt-4o-mini",
            "max_tokens": 5,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Hello there"}]
                    + [{"type": "image_url", "image_url": {"url": PNG}}] * 2,
                }
            ],
        },
    )
    assert (text_only.status_code, with_images.status_code) == (200, 200)
    plain, pictured = _attempts(two_tenants[0])
    # gpt-4o-mini: $0.15 per million input tokens; an image costs it up to 48,169 tokens.
    per_image = Decimal(48_169) * Decimal("0.15") / 1_000_000
    assert pictured.reserved_usd - plain.reserved_usd >= 2 * per_image


def test_a_model_without_images_refuses_them_and_policies_skip_it(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider, settings: Any
) -> None:
    from apps.llm.platform.models import CatalogModel
    from apps.llm.platform.selectors import catalog_forget

    CatalogModel.objects.filter(name="gpt-4o-mini").update(max_tokens_per_image=0)
    catalog_forget()
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}]
    refused = _post(key_a, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": image})
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "images_not_supported")
    routed = _post(key_a, "/v1/chat/completions", {"policy": "cheapest", "messages": image, "max_tokens": 5})
    assert routed.status_code == 200
    assert routed.json()["model"] != "gpt-4o-mini"


def test_a_provider_reporting_more_than_reserved_is_charged_in_full_and_counted(
    two_tenants: tuple[Organization, Organization],
    key_a: str,
    fake_provider: FakeProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = metrics.OVERRUNS.labels("openai", "gpt-4o-mini")._value.get()
    fake_provider.over_report(prompt_tokens=5_000_000)
    with caplog.at_level(logging.WARNING, logger="apps.llm.budgets"):
        response = _post(key_a, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 5})
    assert response.status_code == 200
    (attempt,) = _attempts(two_tenants[0])
    real_cost = Decimal(attempt.input_tokens) * Decimal("0.15") / 1_000_000 + Decimal(5) * Decimal("0.6") / 1_000_000
    assert attempt.input_tokens > 5_000_000
    assert attempt.cost_usd == real_cost.quantize(Decimal("0.00000001")) > attempt.reserved_usd
    assert Decimal(response["x-cognitionos-cost-usd"]) == attempt.cost_usd
    assert metrics.OVERRUNS.labels("openai", "gpt-4o-mini")._value.get() == before + 1
    assert any(attempt.request_id in record.getMessage() for record in caplog.records if "overrun" in record.message)


# --- 3. One organization can't open the breaker for all -----------------------------------------


def test_malformed_requests_and_a_bad_own_key_of_one_organization_leave_the_model_to_others(
    two_tenants: tuple[Organization, Organization],
    key_a: str,
    key_b: str,
    fake_provider: FakeProvider,
    settings: Any,
) -> None:
    tenant_a, _ = two_tenants
    settings.LLM_BREAKER_FAILURES = 3
    for _ in range(8):  # refused before any provider call
        assert (
            _post(key_a, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO, "x": 1}).status_code == 400
        )
    for _ in range(4):  # the providers refuse the request itself: the request's fault, not the models'
        fake_provider.fail_next(2, status=400)  # gpt-4o-mini, then its fallback
        refused = _post(
            key_a, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO, "cache": {"skip": True}}
        )
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, "provider_rejected_request")
    assert breaker_state("openai", "gpt-4o-mini") != OPEN

    # A's own key is refused by the provider and then rate limited: A's breaker for its key opens ...
    provider_credential_set(organization=tenant_a, provider="openai", api_key="sk-org-a-bad-key", actor=TEST_ACTOR)
    provider_own_keys_forget()
    settings.LLM_MAX_ATTEMPTS = 1
    for _ in range(4):
        fake_provider.fail_next(1, status=429)
        _post(key_a, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO, "cache": {"skip": True}})
    assert breaker_state("openai", "gpt-4o-mini", scope=f"org{tenant_a.pk}") == OPEN
    # ... and B, on the platform's credentials, still gets gpt-4o-mini.
    assert breaker_state("openai", "gpt-4o-mini") != OPEN
    answered = _post(key_b, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO})
    assert answered.status_code == 200
    assert answered.json()["model"] == "gpt-4o-mini"


def test_provider_outages_still_open_the_shared_breaker(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.LLM_BREAKER_FAILURES = 3
    settings.LLM_MAX_ATTEMPTS = 1
    fake_provider.fail_models({"gpt-4o-mini"}, status=503)
    for _ in range(3):
        _post(key_a, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO, "cache": {"skip": True}})
    assert breaker_state("openai", "gpt-4o-mini") == OPEN


# --- 4. Absurd parameters are refused before any work ---------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "text-embedding-3-small", "input": "x", "dimensions": 50_000_000}, "dimensions"),
        ({"model": "text-embedding-3-small", "input": "x", "dimensions": 1537}, "dimensions"),
        ({"model": "text-embedding-3-small", "input": ["x"] * 2049}, "input"),
        ({"model": "text-embedding-3-small", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_embedding_bounds_come_from_the_catalog_and_the_api(
    two_tenants: tuple[Organization, Organization],
    key_a: str,
    fake_provider: FakeProvider,
    body: dict[str, Any],
    param: str,
) -> None:
    started = time.perf_counter()
    response = _post(key_a, "/v1/embeddings", body)
    assert time.perf_counter() - started < 1.0
    assert (response.status_code, response.json()["error"]["param"]) == (400, param)
    assert fake_provider.calls == []


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 8}, "n"),
        ({"max_tokens": 10_000_000}, "max_tokens"),
        ({"temperature": 1e308}, "temperature"),
        ({"top_logprobs": 1000}, "top_logprobs"),
        ({"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias"),
        ({"stop": ["a"] * 5}, "stop"),
        ({"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]}, "tools"),
    ],
)
def test_chat_numbers_and_counts_are_bounded(
    two_tenants: tuple[Organization, Organization],
    key_a: str,
    fake_provider: FakeProvider,
    extra: dict[str, Any],
    param: str,
) -> None:
    response = _post(key_a, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO, **extra})
    assert (response.status_code, response.json()["error"]["param"]) == (400, param)
    assert fake_provider.calls == []


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/messages"])
def test_deep_json_is_a_400_and_big_bodies_a_413_in_the_endpoints_shape(
    two_tenants: tuple[Organization, Organization], key_a: str, settings: Any, path: str
) -> None:
    deep = _post(key_a, path, "[" * 100_000 + "]" * 100_000)
    assert deep.status_code == 400
    not_a_number = _post(key_a, path, '{"model": "gpt-4o-mini", "temperature": NaN, "messages": []}')
    assert not_a_number.status_code == 400
    settings.LLM_MAX_REQUEST_BYTES = 1_000
    big = _post(key_a, path, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 2_000}]})
    assert big.status_code == 413
    if path == "/v1/messages":
        assert deep.json()["type"] == big.json()["type"] == "error"
        assert big.json()["error"]["type"] == "request_too_large"
    else:
        assert deep.json()["error"]["code"] == "json_too_deep"
        assert big.json()["error"]["code"] == "request_too_large"


def test_embeddings_count_their_input_toward_tokens_per_minute(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider
) -> None:
    tenant_a, _ = two_tenants
    # Rolled back with the test's transaction; the process's cached plan is dropped both ways.
    PlanVersion.objects.filter(plan_id=tenant_a.plan_id).update(tokens_per_minute=1_000)
    entitlement_cache_forget()
    try:
        small = _post(key_a, "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x" * 400})
        assert small.status_code == 200
        big = _post(key_a, "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x" * 8_000})
        assert (big.status_code, big.json()["error"]["code"]) == (429, "rate_limit_exceeded")
    finally:
        entitlement_cache_forget()


def test_a_refused_request_leaves_no_ledger_row(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider
) -> None:
    _post(key_a, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": HELLO, "n": 2})
    assert [a for a in _attempts(two_tenants[0]) if a.status != AttemptStatus.CACHE_HIT] == []


def test_anthropic_tool_turns_are_translated_not_dropped(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: FakeProvider
) -> None:
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 50,
        "tools": [{"name": "weather", "input_schema": {"type": "object", "properties": {}}}],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_1", "name": "weather", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "tu_1", "content": "sunny"},
                    {"type": "text", "text": "ok?"},
                ],
            },
        ],
    }
    response = _post(key_a, "/v1/messages", body)
    assert response.status_code == 200, response.content
    sent = fake_provider.calls[-1].body["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "tu_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}],
    }
    assert sent[2] == {"role": "tool", "tool_call_id": "tu_1", "content": "sunny"}
    assert sent[3] == {"role": "user", "content": [{"type": "text", "text": "ok?"}]}
    thinking = {**body, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}
    refused = _post(key_a, "/v1/messages", thinking)
    assert (refused.status_code, refused.json()["error"]["type"]) == (400, "invalid_request_error")
    assert "messages[0].content[0].type" in refused.json()["error"]["message"]
