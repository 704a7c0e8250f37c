from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

from django.test import Client
from django.utils import timezone
from openai.types.chat import ChatCompletionMessageParam

from apps.accounts.principals import Principal
from apps.audit.models import AuditEvent
from apps.llm.budgets import Settlement, Spender, attempt_reserve, attempt_settle, holds_sweep
from apps.llm.models import AttemptStatus, BudgetWindow, UsageAttempt
from apps.llm.services import budget_set
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]
KEY = Principal(kind="api_key", id="7", label="key 7")


def _ask(key: str, **extra: object) -> tuple[int, dict[str, object]]:
    """A gateway call; the connection is back on the caller's organization afterwards."""
    schema_before = tenant_connection().schema_name
    body = {"model": "simulated-pro", "messages": HELLO, "cache": {"skip": True}, **extra}
    response = Client().post(
        "/v1/chat/completions",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_HOST="localhost",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    tenant_connection().set_schema(schema_before)
    return response.status_code, response.json()


def test_hard_budget_refuses_with_402_in_openai_shape_and_writes_nothing(key_a: str, tenant: Organization) -> None:
    budget_set(
        organization=tenant, scope="organization", period="day", limit_usd=Decimal("0.01"), hard=True, actor=TEST_ACTOR
    )
    status, body = _ask(key_a)  # simulated-pro may write 32,000 tokens at $15/M: $0.48 worst case
    assert status == 402
    error: Any = body["error"]
    assert error == {
        "message": error["message"],
        "type": "insufficient_quota",
        "param": None,
        "code": "budget_exceeded",
    }
    assert not UsageAttempt.objects.exists()
    assert not BudgetWindow.objects.filter(reserved_usd__gt=0).exists()


def test_small_max_tokens_fits_under_the_budget_and_settles_the_actual_cost(key_a: str, tenant: Organization) -> None:
    budget_set(
        organization=tenant,
        scope="organization",
        period="month",
        limit_usd=Decimal("0.01"),
        hard=True,
        actor=TEST_ACTOR,
    )
    status, _ = _ask(key_a, max_tokens=100)
    assert status == 200
    attempt = UsageAttempt.objects.get()
    window = BudgetWindow.objects.get()
    assert window.reserved_usd == 0
    assert window.spent_usd == attempt.cost_usd > 0
    assert attempt.reserved_usd >= attempt.cost_usd
    assert window.period_start == timezone.now().date().replace(day=1)


def test_request_max_cost_is_a_budget_of_its_own(key_a: str, tenant: Organization) -> None:
    status, body = _ask(key_a, max_cost_usd=0.0001)
    assert status == 402 and body["error"]["code"] == "budget_exceeded"  # type: ignore[index]
    assert _ask(key_a, max_cost_usd=1)[0] == 200


def test_key_budget_applies_to_that_key_only(key_a: str, key_b: str, tenant: Organization) -> None:
    from apps.apikeys.models import ApiKey

    key_id = ApiKey.objects.get(organization=tenant, name="tests A").pk
    budget_set(
        organization=tenant,
        scope="key",
        scope_id=str(key_id),
        period="day",
        limit_usd=Decimal("0.001"),
        hard=True,
        actor=TEST_ACTOR,
    )
    assert _ask(key_a)[0] == 402
    assert _ask(key_a, max_tokens=10)[0] == 200  # small enough to fit
    assert _ask(key_b)[0] == 200  # organization B's key: no budget there


def test_soft_limit_records_an_event_once(tenant: Organization) -> None:
    budget_set(
        organization=tenant,
        scope="organization",
        period="day",
        limit_usd=Decimal("1.00"),
        soft_percent=50,
        hard=False,
        actor=TEST_ACTOR,
    )
    spender = Spender(organization=tenant, principal=KEY)
    for number in range(1, 4):
        attempt = attempt_reserve(
            spender=spender,
            request_id="r",
            attempt=number,
            model_name="m",
            provider="p",
            amount_usd=Decimal("0.40"),
            max_cost_usd=None,
        )
        attempt_settle(
            organization=tenant,
            attempt=attempt,
            settlement=Settlement(status=AttemptStatus.SUCCEEDED, cost_usd=Decimal("0.30")),
        )
    assert BudgetWindow.objects.get().spent_usd == Decimal("0.90")
    events = AuditEvent.objects.filter(action="budget.soft_limit_reached")
    assert events.count() == 1
    assert events.get().metadata["spent_usd"] == "0.60000000"


def test_an_attempt_is_settled_once_and_the_sweeper_charges_abandoned_holds(tenant: Organization) -> None:
    budget_set(
        organization=tenant, scope="organization", period="day", limit_usd=Decimal("5"), hard=True, actor=TEST_ACTOR
    )
    spender = Spender(organization=tenant, principal=KEY)
    abandoned = attempt_reserve(
        spender=spender,
        request_id="dead",
        attempt=1,
        model_name="m",
        provider="p",
        amount_usd=Decimal("0.25"),
        max_cost_usd=None,
    )
    assert BudgetWindow.objects.get().reserved_usd == Decimal("0.25")
    assert holds_sweep(organization=tenant) == 0  # not expired yet
    assert holds_sweep(organization=tenant, now=timezone.now() + dt.timedelta(hours=1)) == 1
    abandoned.refresh_from_db()
    assert (abandoned.status, abandoned.cost_usd) == (AttemptStatus.SWEPT, Decimal("0.25"))
    window = BudgetWindow.objects.get()
    assert (window.reserved_usd, window.spent_usd) == (Decimal(0), Decimal("0.25"))
    # A late settle from the process that was thought dead changes nothing.
    assert not attempt_settle(
        organization=tenant,
        attempt=abandoned,
        settlement=Settlement(status=AttemptStatus.SUCCEEDED, cost_usd=Decimal("0.01")),
    )
    assert BudgetWindow.objects.get().spent_usd == Decimal("0.25")
