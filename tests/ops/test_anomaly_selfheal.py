"""Anomaly detection end to end: calls through the real gateway to the fake provider fill the
traffic counters, the beat task's function judges them, and a failing deployment's breaker opens,
routing avoids it, an Anomaly row explains it and the alert metric counts it; it resolves itself
once the deployment answers again. One organization's bad requests never open the shared breaker."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

import apps.llm.router
from apps.apikeys.selectors import apikey_cache_forget
from apps.llm import caching
from apps.llm.breaker import breaker_state
from apps.llm.budgets import usage_fold
from apps.llm.platform.selectors import catalog_forget
from apps.llm.router import deployment_observe
from apps.llm.traffic import TRAFFIC_BUCKET_S, traffic_bucket
from apps.ops import anomalies
from apps.ops.anomalies import anomalies_detect
from apps.ops.anomaly_metrics import anomalies_open
from apps.ops.models import Anomaly, OperatorAction
from apps.tenants.models import Organization
from cognitionos.redis import redis_client
from tests.llm.conftest import gateway_client
from tests.support.fake_provider import FakeProvider

HELLO: Any = [{"role": "user", "content": "Hello"}]
NO_CACHE: Any = {"cache": {"skip": True}}


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    def forget() -> None:
        caching.l1.clear()
        catalog_forget()
        apikey_cache_forget()
        client = redis_client()
        keys = list(client.scan_iter("llm:*", count=1000)) + list(client.scan_iter("ops:anomaly:*", count=1000))
        if keys:
            client.delete(*keys)

    forget()
    yield
    forget()


@pytest.fixture
def fake_provider(fake_provider: FakeProvider, settings: Any) -> FakeProvider:
    """The shared fake provider (tests/conftest.py), with two attempts per call; the breaker's own
    count of failures in a row stays out of the way: the anomaly opens it here."""
    settings.LLM_MAX_ATTEMPTS = 2
    settings.LLM_BREAKER_FAILURES = 10_000
    return fake_provider


class Clock:
    """The traffic bucket the engine's calls count in (the counters' clock), moved by the test. It
    starts on an even bucket and the test judges after odd ones, as the beat task judges pairs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bucket = traffic_bucket() - 200
        self.bucket -= self.bucket % 2
        monkeypatch.setattr(apps.llm.router, "traffic_bucket", lambda now=None: self.bucket)

    def at(self, bucket: int) -> float:
        return bucket * TRAFFIC_BUCKET_S + 1.0

    def detect(self) -> anomalies.DetectReport:
        """The beat task's run just after the current bucket (an odd one: a whole pair) ended."""
        assert self.bucket % 2 == 1
        return anomalies_detect(now=self.at(self.bucket + 1))


def _warm_up(clock: Clock, model: str, *, buckets: int = 40, seed: int = 1) -> None:
    """Normal traffic (through the engine's own counting code): 6 calls per bucket, 1 % failing."""
    rng = random.Random(seed)
    for _ in range(buckets):
        for _ in range(6):
            failed = rng.random() < 0.01
            deployment_observe(
                model,
                success=not failed,
                latency_ms=None if failed else 400 * math.exp(rng.gauss(0, 0.2)),
                now=clock.at(clock.bucket),
            )
        clock.bucket += 1
    clock.bucket -= 1
    clock.detect()
    clock.bucket += 1


def _open_counts() -> dict[str, float]:
    (family,) = list(anomalies_open())
    return {sample.labels["kind"]: sample.value for sample in family.samples}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


@pytest.fixture
def reaped(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The reaper runs the detector asks for (sent to the broker otherwise)."""
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr("apps.work.tasks.work_maintain.delay", lambda **kwargs: sent.append(kwargs))
    return sent


def test_a_failing_deployment_opens_its_breaker_routes_around_it_explains_and_resolves(
    *,
    two_tenants: tuple[Organization, Organization],
    key_a: str,
    fake_provider: FakeProvider,
    settings: Any,
    clock: Clock,
    reaped: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    _warm_up(clock, "gpt-4o-mini")
    assert not Anomaly.objects.exists()
    client = gateway_client(key_a)

    # The provider fails gpt-4o-mini for two buckets: every call falls back to its chain's next model.
    fake_provider.fail_models({"gpt-4o-mini"}, status=503)
    for _ in range(2):
        for _ in range(3):
            answered = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, extra_body=NO_CACHE)
            assert answered.model == "claude-haiku-4-5"
        clock.bucket += 1
    clock.bucket -= 1
    usage_fold(organization=two_tenants[0])  # the public hour buckets say who saw the failures
    with django_capture_on_commit_callbacks(execute=True):
        report = clock.detect()
    assert report.opened == ["deployment_errors openai/gpt-4o-mini"]

    anomaly = Anomaly.objects.get()
    assert (anomaly.kind, anomaly.subject, anomaly.resolved_at) == ("deployment_errors", "openai/gpt-4o-mini", None)
    assert anomaly.observed > anomaly.threshold > anomaly.baseline
    assert "6 of 6 attempts failed provider-side" in anomaly.explanation
    # What the rule that opened it saw, and the line it crossed, against the baseline.
    assert f"against a normal level of {anomaly.baseline:.6g}" in anomaly.explanation
    assert "samples in a row were over" in anomaly.explanation or "its smoothed level reached" in anomaly.explanation
    assert "Opened the breaker of openai/gpt-4o-mini" in anomaly.action
    assert "reaper" in anomaly.action and reaped == [{"tenant_id": two_tenants[0].pk, "duty": "reap"}]
    assert breaker_state("openai", "gpt-4o-mini") == "open"
    logged = OperatorAction.objects.get(action="deployment.breaker_opened")
    assert (logged.actor_label, logged.target) == ("anomaly detection", "openai/gpt-4o-mini")
    assert _open_counts() == {
        "deployment_latency": 0.0,
        "deployment_errors": 1.0,
        "deployment_cost": 0.0,
        "organization_spend": 0.0,
    }

    # Routing avoids it: the next call goes straight to the fallback, gpt-4o-mini is not even tried.
    fake_provider.reset()
    clock.bucket += 1
    answered = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, extra_body=NO_CACHE)
    assert answered.model == "claude-haiku-4-5"
    assert [call.model for call in fake_provider.calls] == ["claude-haiku-4-5"]

    # The provider is back; after the cooldown one probe call closes the breaker, and once the
    # deployment's error rate stays normal the anomaly resolves itself.
    settings.LLM_BREAKER_COOLDOWN_S = 1
    time.sleep(1.1)
    for _ in range(6):
        for _ in range(2):
            assert (
                client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, extra_body=NO_CACHE).model
                == "gpt-4o-mini"
            )
        clock.bucket += 1
    clock.bucket -= 1
    assert breaker_state("openai", "gpt-4o-mini") == "closed"
    report = clock.detect()
    assert report.resolved == ["deployment_errors openai/gpt-4o-mini"]
    anomaly.refresh_from_db()
    assert anomaly.resolved_at is not None and "Resolved: back to" in anomaly.explanation
    assert _open_counts()["deployment_errors"] == 0.0


def test_one_organizations_bad_requests_never_open_the_shared_breaker(
    *,
    two_tenants: tuple[Organization, Organization],
    key_a: str,
    key_b: str,
    fake_provider: FakeProvider,
    clock: Clock,
) -> None:
    _warm_up(clock, "gpt-4o-mini")
    # Organization B sends requests the provider rejects as the request's fault (400) for four
    # buckets: its calls fall back, but gpt-4o-mini's figures are untouched.
    for _ in range(4):
        for _ in range(3):
            fake_provider.fail_next(1, status=400, error_type="invalid_request_error")
            gateway_client(key_b).chat.completions.create(model="gpt-4o-mini", messages=HELLO, extra_body=NO_CACHE)
        clock.bucket += 1
    clock.bucket -= 1
    assert [call.status for call in fake_provider.calls].count(400) == 12
    report = clock.detect()
    assert report.opened == []
    assert not Anomaly.objects.exists()
    assert breaker_state("openai", "gpt-4o-mini") == "closed"
    # Organization A is still served by gpt-4o-mini itself.
    assert (
        gateway_client(key_a).chat.completions.create(model="gpt-4o-mini", messages=HELLO, extra_body=NO_CACHE).model
        == "gpt-4o-mini"
    )


def test_a_noisy_but_normal_deployment_and_organization_open_nothing(
    two_tenants: tuple[Organization, Organization], clock: Clock
) -> None:
    rng = random.Random(3)
    organization = two_tenants[0]
    for index in range(180):  # 45 minutes of 15 s buckets, judged every 2 buckets as the beat does
        for _ in range(rng.randint(2, 10)):
            failed = rng.random() < 0.03
            deployment_observe(
                "gpt-4o-mini",
                success=not failed,
                latency_ms=None if failed else 600 * math.exp(rng.gauss(0, 0.4)),
                now=clock.at(clock.bucket),
                organization_id=organization.pk,
                cost_usd=None if failed else _usd(0.002 * math.exp(rng.gauss(0, 0.8))),
            )
        if index % 2:
            clock.detect()
        clock.bucket += 1
    state = redis_client().hget(anomalies.STATE_KEY, "deployment_errors|gpt-4o-mini")
    assert state is not None  # the series was judged, not skipped
    assert redis_client().hget(anomalies.STATE_KEY, f"organization_spend|{organization.pk}") is not None
    assert not Anomaly.objects.exists()
    assert set(_open_counts().values()) == {0.0}


def _usd(value: float) -> Any:
    from decimal import Decimal

    return Decimal(f"{value:.8f}")


def test_an_organizations_deletion_can_forget_its_spend_series_and_counters(
    two_tenants: tuple[Organization, Organization], clock: Clock
) -> None:
    organization, other = two_tenants
    for _ in range(2):
        for who in (organization, other):
            deployment_observe(
                "gpt-4o-mini",
                success=True,
                latency_ms=100,
                now=clock.at(clock.bucket),
                organization_id=who.pk,
                cost_usd=_usd(0.01),
            )
        clock.bucket += 1
    clock.bucket -= 1
    clock.detect()
    client = redis_client()
    assert client.hget(anomalies.STATE_KEY, f"organization_spend|{organization.pk}") is not None
    anomalies.anomalies_organization_forget(organization_id=organization.pk)
    assert client.hget(anomalies.STATE_KEY, f"organization_spend|{organization.pk}") is None
    assert client.hget(anomalies.STATE_KEY, f"organization_spend|{other.pk}") is not None
    fields = set()
    for key in client.scan_iter("llm:traffic:*"):
        fields |= {field.decode() if isinstance(field, bytes) else field for field in client.hkeys(key)}
    assert f"o|{organization.pk}" not in fields and f"o|{other.pk}" in fields
