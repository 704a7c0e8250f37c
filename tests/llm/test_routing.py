"""Routing policies read each deployment's observed latency and error rate, shared through Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from django_tenants.utils import schema_context

from apps.accounts.principals import Principal
from apps.llm.breaker import OPENED_AT, breaker_key
from apps.llm.calls import chat_call_parse, chat_complete
from apps.llm.models import AttemptStatus, UsageAttempt
from apps.llm.router import candidates, deployment_observations_flush, deployment_observe, observed
from apps.llm.traffic import traffic_bucket, traffic_buckets
from apps.tenants.models import Organization
from cognitionos.redis import redis_client
from tests.support.fake_provider import FakeProvider

PRINCIPAL = Principal(kind="api_key", id="1", label="tests")


def _order(policy: str) -> list[str]:
    found = candidates(model=None, policy=policy, min_quality=1, prompt_tokens=100, output_tokens=100)
    return [entry.model.name for entry in found]


def test_the_error_rate_is_a_moving_average_that_fades_with_time(settings: Any) -> None:
    settings.LLM_ROUTER_ERROR_HALF_LIFE_S = 100
    now = time.time()
    deployment_observe("m", success=True, latency_ms=40, now=now)
    assert observed(["m"], now=now) == ({"m": 40.0}, {})  # no failure yet: no error rate at all
    deployment_observe("m", success=False, now=now)
    deployment_observe("m", success=False, now=now)
    assert observed(["m"], now=now)[1]["m"] == pytest.approx(0.36, abs=1e-4)
    deployment_observe("m", success=True, latency_ms=60, now=now)
    latency, errors = observed(["m"], now=now)
    assert latency["m"] == pytest.approx(44.0) and errors["m"] == pytest.approx(0.288, abs=1e-4)
    assert observed(["m"], now=now + 100)[1]["m"] == pytest.approx(0.144, abs=1e-4)  # one half-life later
    for _ in range(40):
        deployment_observe("m", success=True, latency_ms=40, now=now)
    assert observed(["m"], now=now)[1] == {}  # recovered: the key is gone


@pytest.mark.parametrize("policy", ["fastest", "balanced"])
def test_a_model_with_a_high_error_rate_goes_after_healthy_ones(db: None, policy: str) -> None:
    now = time.time()
    deployment_observe("simulated-mini", success=True, latency_ms=10, now=now)
    deployment_observe("simulated-pro", success=True, latency_ms=50, now=now)
    assert _order(policy) == ["simulated-mini", "simulated-pro"]
    deployment_observe("simulated-mini", success=False, now=now)
    assert _order(policy) == ["simulated-mini", "simulated-pro"]  # one failure (rate 0.2) is not enough
    deployment_observe("simulated-mini", success=False, now=now)
    assert _order(policy) == ["simulated-pro", "simulated-mini"]
    assert _order("cheapest")[0] == "simulated-mini"  # cost alone decides `cheapest`


def test_failures_long_ago_no_longer_demote_a_model(db: None, settings: Any) -> None:
    settings.LLM_ROUTER_ERROR_HALF_LIFE_S = 60
    past = time.time() - 600
    deployment_observe("simulated-mini", success=True, latency_ms=10, now=past)
    deployment_observe("simulated-pro", success=True, latency_ms=50, now=past)
    for _ in range(5):
        deployment_observe("simulated-mini", success=False, now=past)
    assert _order("fastest") == ["simulated-mini", "simulated-pro"]


def test_the_engine_records_provider_failures_but_not_client_errors(
    tenant: Organization, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.LLM_MAX_ATTEMPTS = 2
    fake_provider.fail_next(1, status=400, error_type="invalid_request_error")
    call = chat_call_parse({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    with schema_context(tenant.schema_name):
        chat_complete(organization=tenant, principal=PRINCIPAL, call=call)
    assert observed(["gpt-4o-mini"])[1] == {}  # the request's fault, not the deployment's
    fake_provider.fail_models({"gpt-4o-mini"})
    skip = chat_call_parse(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "cache": {"skip": True}}
    )
    with schema_context(tenant.schema_name):
        outcome = chat_complete(organization=tenant, principal=PRINCIPAL, call=skip)
    assert outcome.model == "claude-haiku-4-5"  # its fallback
    latency, errors = observed(["gpt-4o-mini", "claude-haiku-4-5"])
    assert errors["gpt-4o-mini"] == pytest.approx(0.36, abs=0.01)
    assert "claude-haiku-4-5" in latency and "claude-haiku-4-5" not in errors
    assert _order("fastest")[-1] == "gpt-4o-mini"


def _spend(organization: Organization) -> float:
    now = traffic_bucket()
    return sum(bucket.spend_usd.get(organization.pk, 0.0) for bucket in traffic_buckets(first=now - 1, last=now))


def test_observations_wait_for_their_batch_and_a_probes_success_closes_its_breaker_at_once(
    two_tenants: tuple[Organization, Organization], fake_provider: FakeProvider, settings: Any
) -> None:
    settings.LLM_OBSERVE_BATCH_SECONDS = 3600  # only an explicit flush sends them
    org_a, org_b = two_tenants
    deployment_observations_flush()
    call = chat_call_parse(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "cache": {"skip": True}}
    )
    with schema_context(org_a.schema_name):
        chat_complete(organization=org_a, principal=PRINCIPAL, call=call)
    assert observed(["gpt-4o-mini"])[0] == {} and _spend(org_a) == 0  # answered; its figures wait
    assert deployment_observations_flush() == 1
    assert "gpt-4o-mini" in observed(["gpt-4o-mini"])[0]
    spent_a = _spend(org_a)
    assert spent_a > 0 and _spend(org_b) == 0  # counted for the organization that called only
    with schema_context(org_b.schema_name):
        for _ in range(2):
            chat_complete(organization=org_b, principal=PRINCIPAL, call=call)
    assert deployment_observations_flush() == 2  # one pipeline
    assert _spend(org_b) == pytest.approx(2 * spent_a) and _spend(org_a) == spent_a

    # A breaker past its cooldown (half-open): the probe's success closes it before any flush.
    key = breaker_key("openai", "gpt-4o-mini")
    redis_client().hset(key, mapping={"failures": 5, OPENED_AT: str(time.time() - 3600)})
    with schema_context(org_a.schema_name):
        chat_complete(organization=org_a, principal=PRINCIPAL, call=call)
    assert not redis_client().exists(key)
    deployment_observations_flush()


def test_an_answered_call_is_returned_even_when_its_figures_cannot_be_written(
    tenant: Organization, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def store_down(**_: object) -> None:
        raise redis.ConnectionError("Redis went away after the admission")

    monkeypatch.setattr("apps.llm.router._observe_script", lambda: store_down)
    call = chat_call_parse(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "cache": {"skip": True}}
    )
    with schema_context(tenant.schema_name):
        outcome = chat_complete(organization=tenant, principal=PRINCIPAL, call=call)
        (attempt,) = UsageAttempt.objects.filter(request_id=outcome.request_id)
    assert outcome.body["choices"][0]["message"]["content"] and attempt.status == AttemptStatus.SUCCEEDED
    assert "could not be written" in caplog.text
