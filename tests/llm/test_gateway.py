from __future__ import annotations

import json
import time
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import openai
import pytest
from django.test import Client
from django_tenants.utils import schema_context
from openai.types.chat import ChatCompletionMessageParam

from apps.accounts.principals import Principal
from apps.apikeys.models import ApiKey
from apps.apikeys.services import apikey_revoke
from apps.billing.selectors import plan_limit
from apps.llm.budgets import usage_fold
from apps.llm.calls import chat_call_parse, chat_stream
from apps.llm.models import AttemptStatus, CallContent, UsageAttempt
from apps.llm.platform.models import UsageRollup
from apps.tenants.models import Organization
from cognitionos.redis import redis_client
from tests.conftest import LiveDb
from tests.factories import TEST_ACTOR
from tests.llm.conftest import gateway_client

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]


def _attempts(organization: Organization) -> list[UsageAttempt]:
    with schema_context(organization.schema_name):
        return list(UsageAttempt.objects.order_by("id"))


def test_chat_completion_through_the_openai_sdk_is_metered_and_cached(
    two_tenants: tuple[Organization, Organization], key_a: str
) -> None:
    tenant_a, _ = two_tenants
    client = gateway_client(key_a)
    first = client.chat.completions.with_raw_response.create(model="simulated-mini", messages=HELLO)
    completion = first.parse()
    assert completion.model == "simulated-mini"
    assert (completion.choices[0].message.content or "").startswith("[simulated] simulated-mini")
    assert first.headers["x-cognitionos-cache"] == "miss"
    assert first.headers["x-cognitionos-simulated"] == "true"
    cost = Decimal(first.headers["x-cognitionos-cost-usd"])
    assert cost > 0

    second = client.chat.completions.with_raw_response.create(model="simulated-mini", messages=HELLO)
    assert second.headers["x-cognitionos-cache"] == "l1"
    assert Decimal(second.headers["x-cognitionos-cost-usd"]) == 0
    assert second.parse().choices[0].message.content == completion.choices[0].message.content

    miss, hit = _attempts(tenant_a)
    assert (miss.status, miss.cost_usd, miss.cache_layer) == (AttemptStatus.SUCCEEDED, cost, "")
    assert miss.input_tokens == completion.usage.prompt_tokens if completion.usage else False
    assert (hit.status, hit.cost_usd, hit.saved_usd, hit.cache_layer) == (
        AttemptStatus.CACHE_HIT,
        Decimal(0),
        cost,
        "l1",
    )
    assert miss.request_id == first.headers["x-cognitionos-request-id"]
    assert not UsageRollup.objects.filter(organization=tenant_a).exists()  # the periodic fold adds them
    assert usage_fold(organization=tenant_a) == 2
    rollup = UsageRollup.objects.get(organization=tenant_a, model_name="simulated-mini")
    assert (rollup.requests, rollup.cache_hits, rollup.cost_usd, rollup.saved_usd) == (2, 1, cost, cost)


def test_cache_is_per_organization(two_tenants: tuple[Organization, Organization], key_a: str, key_b: str) -> None:
    tenant_a, tenant_b = two_tenants
    gateway_client(key_a).chat.completions.create(model="simulated-mini", messages=HELLO)
    response_b = gateway_client(key_b).chat.completions.with_raw_response.create(model="simulated-mini", messages=HELLO)
    assert response_b.headers["x-cognitionos-cache"] == "miss"
    assert [a.status for a in _attempts(tenant_a)] == [AttemptStatus.SUCCEEDED]
    assert [a.status for a in _attempts(tenant_b)] == [AttemptStatus.SUCCEEDED]


def test_every_parameter_that_changes_the_answer_is_in_the_cache_key(
    two_tenants: tuple[Organization, Organization], key_a: str
) -> None:
    client = gateway_client(key_a)
    client.chat.completions.create(model="simulated-mini", messages=HELLO, temperature=0)
    variants: list[dict[str, Any]] = [
        {"temperature": 0.5},
        {"seed": 7},
        {"top_p": 0.5},
        {"stop": ["x"]},
        {"response_format": {"type": "json_object"}},
        {"max_tokens": 50},
        {"extra_body": {"logit_bias": {"1": 2}}},
    ]
    for variant in variants:
        raw = client.chat.completions.with_raw_response.create(model="simulated-mini", messages=HELLO, **variant)
        assert raw.headers["x-cognitionos-cache"] == "miss", variant
    raw = client.chat.completions.with_raw_response.create(model="simulated-pro", messages=HELLO, temperature=0)
    assert raw.headers["x-cognitionos-cache"] == "miss"


def test_cut_off_answers_are_not_cached_and_skip_bypasses_the_cache(
    two_tenants: tuple[Organization, Organization], key_a: str
) -> None:
    client = gateway_client(key_a)
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="simulated-mini", messages=HELLO, max_tokens=2)
        assert raw.parse().choices[0].finish_reason == "length"
        assert raw.headers["x-cognitionos-cache"] == "miss"
    client.chat.completions.create(model="simulated-mini", messages=HELLO)
    raw = client.chat.completions.with_raw_response.create(
        model="simulated-mini", messages=HELLO, extra_body={"cache": {"skip": True}}
    )
    assert raw.headers["x-cognitionos-cache"] == "miss"


def test_streaming_carries_usage_and_cost_and_settles(
    two_tenants: tuple[Organization, Organization], key_a: str
) -> None:
    tenant_a, _ = two_tenants
    stream = gateway_client(key_a).chat.completions.create(
        model="simulated-pro", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    text, usage = [], None
    for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    assert "".join(text).startswith("[simulated] simulated-pro")
    assert usage is not None and usage.completion_tokens > 0
    cost = Decimal(str((usage.model_extra or {})["cost_usd"]))
    (attempt,) = _attempts(tenant_a)
    assert (attempt.status, attempt.cost_usd, attempt.output_tokens) == (
        AttemptStatus.SUCCEEDED,
        cost,
        usage.completion_tokens,
    )


def test_a_client_that_leaves_mid_stream_is_charged_its_reservation(tenant: Organization) -> None:
    call = chat_call_parse({"model": "simulated-pro", "messages": HELLO, "stream": True})
    principal = Principal(kind="api_key", id="1", label="k")
    stream = chat_stream(organization=tenant, principal=principal, call=call)
    assert next(stream.chunks)["choices"]
    close: Any = stream.chunks.close  # type: ignore[attr-defined]  # a generator
    close()  # what the gateway does when the client goes away
    (attempt,) = _attempts(tenant)
    assert attempt.status == AttemptStatus.FAILED and attempt.error_class == "client_disconnected"
    assert attempt.cost_usd == attempt.reserved_usd > 0


def _post(body: object, key: str | None, content_type: str = "application/json") -> tuple[int, dict[str, object]]:
    headers: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    data = body if isinstance(body, str) else json.dumps(body)
    response = Client().post(
        "/v1/chat/completions", data=data, content_type=content_type, HTTP_HOST="localhost", **headers
    )
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("{not json", 400, "invalid_json"),
        ({"model": "simulated-mini"}, 400, "invalid_request"),
        ({"model": "no-such-model", "messages": HELLO}, 404, "model_not_found"),
        ({"model": "text-embedding-3-small", "messages": HELLO}, 404, "model_not_found"),
        ({"model": "simulated-mini", "messages": HELLO, "n": 2}, 400, "unsupported_parameter"),
        ({"model": "simulated-mini", "messages": HELLO, "max_tokens": -5}, 400, "invalid_request"),
        ({"model": "simulated-mini", "messages": HELLO, "max_tokens": 10**12}, 400, "invalid_request"),
        ({"model": "simulated-mini", "messages": [{"role": "wizard", "content": "x"}]}, 400, "invalid_request"),
        ({"messages": HELLO}, 400, "model_required"),
    ],
)
def test_bad_requests_get_openai_shaped_errors_and_touch_nothing(
    two_tenants: tuple[Organization, Organization], key_a: str, body: object, status: int, code: str
) -> None:
    got_status, payload = _post(body, key_a)
    assert got_status == status
    error = payload["error"]
    assert isinstance(error, dict) and error["code"] == code and error["message"] and "type" in error
    assert _attempts(two_tenants[0]) == []


def test_wrong_content_type_and_missing_or_revoked_keys(
    two_tenants: tuple[Organization, Organization], key_a: str
) -> None:
    body = {"model": "simulated-mini", "messages": HELLO}
    assert _post(json.dumps(body), key_a, content_type="text/plain")[0] == 415
    status, payload = _post(body, None)
    assert status == 401 and payload["error"]["code"] == "invalid_api_key"  # type: ignore[index]
    assert _post(body, "cos_000000000000_" + "x" * 40)[0] == 401
    apikey_revoke(api_key=ApiKey.objects.get(organization=two_tenants[0]), actor=TEST_ACTOR)
    from apps.apikeys.selectors import apikey_cache_forget

    apikey_cache_forget()  # on commit in production; the test's transaction never commits
    assert _post(body, key_a)[0] == 401
    with pytest.raises(openai.AuthenticationError):
        gateway_client(key_a).models.list()
    assert _attempts(two_tenants[0]) == []


def test_models_lists_what_the_organization_can_use(
    two_tenants: tuple[Organization, Organization], key_a: str, settings: object
) -> None:
    names = {m.id for m in gateway_client(key_a).models.list().data}
    assert {"simulated-mini", "simulated-pro"} <= names
    assert "gpt-4o-mini" not in names  # no OpenAI credentials configured
    settings.OPENAI_API_KEY = "sk-test"  # type: ignore[attr-defined]
    from apps.llm.platform.selectors import catalog_forget

    catalog_forget()
    names = {m.id for m in gateway_client(key_a).models.list().data}
    assert "gpt-4o-mini" in names


def test_policy_routes_to_the_cheapest_adequate_model(
    two_tenants: tuple[Organization, Organization], key_a: str
) -> None:
    client = gateway_client(key_a)
    assert client.chat.completions.create(model="cheapest", messages=HELLO).model == "simulated-mini"
    strong = client.chat.completions.create(model="cheapest", messages=HELLO, extra_body={"min_quality": 4})
    assert strong.model == "simulated-pro"


def test_rate_limit_answers_429_with_retry_after(
    two_tenants: tuple[Organization, Organization], key_a: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.llm import ratelimits
    from apps.llm.ratelimits import rate_limit_take

    now = time.time()  # one window throughout: a minute turning before the request would empty it
    monkeypatch.setattr(ratelimits, "time", SimpleNamespace(time=lambda: now))
    tenant_a = two_tenants[0]
    for _ in range(plan_limit(tenant_a, "requests_per_minute")):
        rate_limit_take(organization=tenant_a, api_key_id=None, tokens=1)
    response = Client().post(
        "/v1/chat/completions",
        data=json.dumps({"model": "simulated-mini", "messages": HELLO}),
        content_type="application/json",
        HTTP_HOST="localhost",
        HTTP_AUTHORIZATION=f"Bearer {key_a}",
    )
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(response["Retry-After"]) <= 60
    assert _attempts(tenant_a) == []


def test_a_refused_take_gives_back_every_counter_and_other_organizations_keep_their_own(
    two_tenants: tuple[Organization, Organization], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key's token limit refuses: the organization's counters and the key's request counter get
    back what the refused call took, in the same script; the other organization's are untouched."""
    from apps.llm import ratelimits
    from apps.llm.ratelimits import RateLimited, rate_limit_take

    now = time.time()  # one window throughout, whatever the clock does
    monkeypatch.setattr(ratelimits, "time", SimpleNamespace(time=lambda: now))
    tenant_a, tenant_b = two_tenants
    tpm = plan_limit(tenant_a, "tokens_per_minute")
    redis_client().hset("test:reads", "field", "value")
    assert rate_limit_take(organization=tenant_a, api_key_id=5, tokens=tpm - 10, reads=[("test:reads", "field")]) == [
        b"value"
    ]
    rate_limit_take(organization=tenant_b, api_key_id=6, tokens=tpm - 10)
    window = int(now // 60)

    def counters(organization: Organization, key_id: int) -> list[int]:
        names = [
            f"llm:rl:{scope}:{what}:{window}"
            for scope in (f"org:{organization.pk}", f"key:{key_id}")
            for what in ("req", "tok")
        ]
        return [int(value or 0) for value in redis_client().mget(names)]

    before_a, before_b = counters(tenant_a, 5), counters(tenant_b, 6)
    with pytest.raises(RateLimited) as refused:
        rate_limit_take(organization=tenant_a, api_key_id=5, tokens=20)
    assert refused.value.what == "tokens"
    assert counters(tenant_a, 5) == before_a == [1, tpm - 10, 1, tpm - 10]
    assert counters(tenant_b, 6) == before_b
    assert rate_limit_take(organization=tenant_a, api_key_id=5, tokens=10, reads=[("test:missing", "field")]) == [None]
    redis_client().delete("test:reads")


def test_embeddings_are_governed_and_metered(two_tenants: tuple[Organization, Organization], key_a: str) -> None:
    client = gateway_client(key_a)
    raw = client.embeddings.with_raw_response.create(
        model="simulated-embedding", input=["first text", "second text"], encoding_format="float"
    )
    result = raw.parse()
    assert [len(item.embedding) for item in result.data] == [1536, 1536]
    again = client.embeddings.create(model="simulated-embedding", input="first text", encoding_format="float")
    assert again.data[0].embedding == result.data[0].embedding  # deterministic
    assert Decimal(raw.headers["x-cognitionos-cost-usd"]) > 0
    assert [(a.model_name, a.status) for a in _attempts(two_tenants[0])] == [
        ("simulated-embedding", AttemptStatus.SUCCEEDED)
    ] * 2
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="simulated-mini", input="x")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="simulated-embedding", input=[])


def test_embeddings_through_the_openai_provider(
    two_tenants: tuple[Organization, Organization], key_a: str, fake_provider: Any
) -> None:
    result = gateway_client(key_a).embeddings.create(
        model="text-embedding-3-small", input="hello", encoding_format="float"
    )
    assert len(result.data[0].embedding) == 1536
    assert [call.path for call in fake_provider.calls] == ["/v1/embeddings"]


def test_metrics_count_requests_cost_and_cache_hits_without_tenant_labels(
    two_tenants: tuple[Organization, Organization], key_a: str, settings: Any
) -> None:
    def sample(name: str, **labels: str) -> float:
        from prometheus_client import REGISTRY

        return REGISTRY.get_sample_value(name, labels) or 0.0

    before_miss = sample(
        "cognitionos_llm_requests_total", provider="simulator", model="simulated-mini", status="succeeded", cache="miss"
    )
    before_hit = sample(
        "cognitionos_llm_requests_total", provider="cache", model="simulated-mini", status="cache_hit", cache="l1"
    )
    client = gateway_client(key_a)
    client.chat.completions.create(model="simulated-mini", messages=[{"role": "user", "content": "metrics?"}])
    client.chat.completions.create(model="simulated-mini", messages=[{"role": "user", "content": "metrics?"}])
    assert (
        sample(
            "cognitionos_llm_requests_total",
            provider="simulator",
            model="simulated-mini",
            status="succeeded",
            cache="miss",
        )
        == before_miss + 1
    )
    assert (
        sample(
            "cognitionos_llm_requests_total", provider="cache", model="simulated-mini", status="cache_hit", cache="l1"
        )
        == before_hit + 1
    )
    settings.METRICS_TOKEN = "scrape-secret"
    assert Client().get("/metrics", HTTP_HOST="localhost").status_code == 401
    exposition = Client().get("/metrics", HTTP_HOST="localhost", HTTP_AUTHORIZATION="Bearer scrape-secret")
    text = exposition.content.decode()
    assert "cognitionos_llm_cost_usd_total" in text
    assert two_tenants[0].slug not in text and "org_" not in text


def _anthropic_client(key: str) -> Any:
    import anthropic
    import httpx2

    from tests.llm.conftest import _InThisTransaction

    transport = httpx2.WSGITransport(app=_InThisTransaction())
    return anthropic.Anthropic(
        base_url="http://localhost",
        api_key=key,
        max_retries=0,
        http_client=httpx2.Client(transport=transport, base_url="http://localhost"),
    )


def test_messages_endpoint_speaks_anthropic_to_the_anthropic_sdk(
    two_tenants: tuple[Organization, Organization], key_a: str
) -> None:
    client = _anthropic_client(key_a)
    message = client.messages.create(
        model="simulated-pro", max_tokens=200, system="Be brief.", messages=[{"role": "user", "content": "Hello there"}]
    )
    assert message.type == "message" and message.stop_reason == "end_turn"
    assert message.content[0].text.startswith("[simulated] simulated-pro")
    assert message.usage.output_tokens > 0
    streamed = client.messages.create(
        model="simulated-pro", max_tokens=200, stream=True, messages=[{"role": "user", "content": "Stream it"}]
    )
    text = "".join(e.delta.text for e in streamed if e.type == "content_block_delta")
    assert text.startswith("[simulated] simulated-pro")
    assert [a.status for a in _attempts(two_tenants[0])] == [AttemptStatus.SUCCEEDED] * 2
    import anthropic

    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="simulated-pro", max_tokens=-1, messages=[{"role": "user", "content": "x"}])
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_buffered_cache_hits_reach_the_ledger_and_rollup_on_flush(
    two_tenants: tuple[Organization, Organization], key_a: str, key_b: str, settings: Any
) -> None:
    from apps.llm.budgets import cache_hits_flush

    org_a, org_b = two_tenants
    settings.LLM_HIT_BATCH_SECONDS = 3600  # the background flush never runs during the test
    client_a, client_b = gateway_client(key_a), gateway_client(key_b)
    answers_a = [client_a.chat.completions.create(model="simulated-mini", messages=HELLO) for _ in range(3)]
    client_b.chat.completions.create(model="simulated-mini", messages=HELLO)
    client_b.chat.completions.create(model="simulated-mini", messages=HELLO)
    assert [a.status for a in _attempts(org_a)] == [AttemptStatus.SUCCEEDED]  # two hits still buffered
    assert cache_hits_flush() == 3
    hits = [AttemptStatus.CACHE_HIT] * 2
    assert [a.status for a in _attempts(org_a)] == [AttemptStatus.SUCCEEDED, *hits]
    assert [a.status for a in _attempts(org_b)] == [AttemptStatus.SUCCEEDED, AttemptStatus.CACHE_HIT]
    # Each hit row is its organization's, with its caller and its content, in its own schema only.
    hit_rows = _attempts(org_a)[1:]
    assert {row.api_key_id for row in hit_rows} == {ApiKey.objects.get(organization=org_a).pk}
    assert [(row.provider, row.cost_usd, row.saved_usd > 0, row.rolled_up) for row in hit_rows] == [
        ("cache", Decimal(0), True, False)
    ] * 2
    with schema_context(org_a.schema_name):
        contents = CallContent.objects.filter(request_id__in=[row.request_id for row in hit_rows])
        assert sorted(c.answer for c in contents) == [answers_a[0].choices[0].message.content] * 2
    with schema_context(org_b.schema_name):
        assert not UsageAttempt.objects.filter(request_id__in=[row.request_id for row in hit_rows]).exists()
    usage_fold(organization=org_a)
    rollup = UsageRollup.objects.get(organization=org_a, model_name="simulated-mini")
    assert (rollup.requests, rollup.cache_hits) == (3, 2)


@pytest.mark.integration
def test_buffered_hits_of_a_deleted_organization_are_dropped_not_retried_forever(
    live_db: LiveDb, settings: Any
) -> None:
    from apps.llm.budgets import Spender, cache_hit_record, cache_hits_flush

    settings.LLM_HIT_BATCH_SECONDS = 3600  # only the explicit flushes below write
    kept = live_db.organization(slug="kept")
    gone = Organization(pk=10**9, slug="gone", name="Gone", schema_name="org_gone")  # its schema dropped
    principal = Principal(kind="api_key", id="7", label="key 7")
    for organization in (gone, kept):
        cache_hit_record(
            spender=Spender(organization=organization, principal=principal),
            request_id=f"{organization.slug}-1",
            model_name="simulated-mini",
            cache_layer="l1",
            saved_usd=Decimal("0.01"),
        )
    assert cache_hits_flush() == 2
    assert cache_hits_flush() == 0  # nothing kept back for a retry
    with schema_context(kept.schema_name):
        assert UsageAttempt.objects.filter(request_id="kept-1", status=AttemptStatus.CACHE_HIT).exists()


def test_a_model_whose_provider_has_no_credentials_is_refused_with_a_clear_503(
    two_tenants: tuple[Organization, Organization], key_a: str, settings: Any
) -> None:
    settings.OPENAI_API_KEY = ""  # as under `make run` without provider keys
    status, payload = _post({"model": "gpt-4o-mini", "messages": HELLO}, key_a)
    assert status == 503
    error = payload["error"]
    assert isinstance(error, dict) and error["code"] == "provider_not_configured"
    assert "no credentials configured for openai" in error["message"]
    assert _attempts(two_tenants[0]) == []  # nothing reserved, nothing to settle
