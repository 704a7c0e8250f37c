"""Operators' actions on deployments: the breaker (shared by every organization, in Redis) and
taking a deployment out of routing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from apps.accounts.models import User
from apps.llm.breaker import breaker_state
from apps.llm.platform.selectors import catalog_forget
from apps.llm.router import candidates
from apps.ops.models import OperatorAction
from apps.ops.services import (
    OperatorActionRefused,
    operator_breaker_open,
    operator_breaker_reset,
    operator_deployment_enabled_set,
    operator_principal,
)
from cognitionos.redis import redis_client


@pytest.fixture(autouse=True)
def _fresh_breakers() -> Iterator[None]:
    def forget() -> None:
        client = redis_client()
        keys = list(client.scan_iter("llm:*", count=1000))
        if keys:
            client.delete(*keys)
        catalog_forget()

    forget()
    yield
    forget()


def _operator(email: str = "ops@cognitionos.example.com") -> User:
    return User.objects.create_user(email=email, is_staff=True)


def _cheapest() -> list[str]:
    found = candidates(model=None, policy="cheapest", min_quality=1, prompt_tokens=100, output_tokens=100)
    return [entry.model.name for entry in found]


def test_opening_and_resetting_a_breaker_changes_its_state_for_everyone_and_is_logged(db: None) -> None:
    actor = operator_principal(_operator())
    assert breaker_state("simulator", "simulated-mini") == "closed"
    operator_breaker_open(provider="simulator", model="simulated-mini", actor=actor, reason="provider incident")
    assert breaker_state("simulator", "simulated-mini") == "open"
    operator_breaker_reset(provider="simulator", model="simulated-mini", actor=actor, reason="provider recovered")
    assert breaker_state("simulator", "simulated-mini") == "closed"
    logged = list(OperatorAction.objects.order_by("id").values_list("action", "target", "actor_label", "reason"))
    assert logged == [
        ("deployment.breaker_opened", "simulator/simulated-mini", "ops@cognitionos.example.com", "provider incident"),
        ("deployment.breaker_reset", "simulator/simulated-mini", "ops@cognitionos.example.com", "provider recovered"),
    ]


def test_a_disabled_deployment_is_not_routed_to_and_enabling_it_restores_it(
    db: None, django_capture_on_commit_callbacks: Any
) -> None:
    actor = operator_principal(_operator())
    assert "simulated-mini" in _cheapest()
    with django_capture_on_commit_callbacks(execute=True):
        operator_deployment_enabled_set(
            provider="simulator", model="simulated-mini", enabled=False, actor=actor, reason="bad answers"
        )
    assert "simulated-mini" not in _cheapest()
    chain = candidates(model="simulated-pro", policy=None, min_quality=1, prompt_tokens=10, output_tokens=10)
    assert [entry.model.name for entry in chain] == ["simulated-pro"]  # the fallback chain skips it too
    with django_capture_on_commit_callbacks(execute=True):
        operator_deployment_enabled_set(
            provider="simulator", model="simulated-mini", enabled=True, actor=actor, reason="fixed"
        )
    assert "simulated-mini" in _cheapest()
    assert list(OperatorAction.objects.order_by("id").values_list("action", flat=True)) == [
        "deployment.disabled",
        "deployment.enabled",
    ]


def test_only_staff_act_and_a_reason_is_required(db: None) -> None:
    with pytest.raises(OperatorActionRefused):
        operator_principal(User.objects.create_user(email="member@example.com"))
    actor = operator_principal(_operator())
    with pytest.raises(OperatorActionRefused):
        operator_breaker_open(provider="simulator", model="simulated-mini", actor=actor, reason="  ")
    assert breaker_state("simulator", "simulated-mini") == "closed"
    assert not OperatorAction.objects.exists()
