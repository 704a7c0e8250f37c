from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context
from openai.types.chat import ChatCompletionMessageParam

from apps.accounts.principals import Principal
from apps.audit.models import AuditEvent
from apps.llm.budgets import (
    BudgetExceeded,
    PendingSettlement,
    Settlement,
    Spender,
    _settlements_write,
    attempt_reserve,
    attempt_settle,
    budget_holds_fold,
    holds_sweep,
)
from apps.llm.models import AttemptStatus, BudgetHold, BudgetWindow, UsageAttempt
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


@pytest.mark.parametrize("fold_seconds", [0.0, 3600.0], ids=["folded at once", "folded later"])
def test_soft_limit_records_an_event_once(
    tenant: Organization, settings: Any, django_capture_on_commit_callbacks: Any, fold_seconds: float
) -> None:
    settings.LLM_BUDGET_FOLD_SECONDS = fold_seconds
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
        with django_capture_on_commit_callbacks(execute=True):
            attempt_settle(
                organization=tenant,
                attempt=attempt,
                settlement=Settlement(status=AttemptStatus.SUCCEEDED, cost_usd=Decimal("0.30")),
            )
        budget_holds_fold()
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


def _reserve(organization: Organization, amount: str, request_id: str = "r") -> UsageAttempt:
    return attempt_reserve(
        spender=Spender(organization=organization, principal=KEY),
        request_id=request_id,
        attempt=1,
        model_name="m",
        provider="p",
        amount_usd=Decimal(amount),
        max_cost_usd=None,
    )


def _settle(organization: Organization, attempt: UsageAttempt, cost: str) -> None:
    assert attempt_settle(
        organization=organization,
        attempt=attempt,
        settlement=Settlement(status=AttemptStatus.SUCCEEDED, cost_usd=Decimal(cost)),
    )


def _window(organization: Organization) -> tuple[Decimal, Decimal]:
    with schema_context(organization.schema_name):
        window = BudgetWindow.objects.get()
    return window.reserved_usd, window.spent_usd


def test_settled_holds_count_at_their_amounts_until_the_fold_each_organization_its_own(
    two_tenants: tuple[Organization, Organization], settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """Settling writes the cost on the holds, not on the window every call of the organization
    locks; the fold moves it there. Until then a hold still counts whole: a hard limit errs only
    on the safe side."""
    settings.LLM_BUDGET_FOLD_SECONDS = 3600  # only the explicit fold below runs
    org_a, org_b = two_tenants
    for organization in two_tenants:
        budget_set(
            organization=organization, scope="organization", period="day", limit_usd=Decimal(1), actor=TEST_ACTOR
        )
    with django_capture_on_commit_callbacks(execute=True):
        with schema_context(org_a.schema_name):
            _settle(org_a, _reserve(org_a, "0.40", "a1"), "0.10")
        with schema_context(org_b.schema_name):
            _settle(org_b, _reserve(org_b, "0.40", "b1"), "0.20")
    assert _window(org_a) == (Decimal("0.40"), Decimal(0))
    with schema_context(org_a.schema_name):
        assert [h.settled_cost_usd for h in BudgetHold.objects.all()] == [Decimal("0.10")]
        with pytest.raises(BudgetExceeded):
            _reserve(org_a, "0.70", "a2")  # 0.40 still held: refused early, never late

    assert budget_holds_fold() == 2  # both organizations waited for a fold
    assert _window(org_a) == (Decimal(0), Decimal("0.10"))
    assert _window(org_b) == (Decimal(0), Decimal("0.20"))
    for organization in two_tenants:
        with schema_context(organization.schema_name):
            assert not BudgetHold.objects.exists()
    with schema_context(org_a.schema_name):
        _reserve(org_a, "0.70", "a3")
    assert _window(org_a) == (Decimal("0.70"), Decimal("0.10"))
    assert _window(org_b) == (Decimal(0), Decimal("0.20"))


def test_the_sweeper_folds_holds_whose_process_died_before_its_fold(tenant: Organization, settings: Any) -> None:
    settings.LLM_BUDGET_FOLD_SECONDS = 3600
    budget_set(organization=tenant, scope="organization", period="day", limit_usd=Decimal(1), actor=TEST_ACTOR)
    _settle(tenant, _reserve(tenant, "0.40"), "0.15")  # its fold was due after the commit: never came
    assert _window(tenant) == (Decimal("0.40"), Decimal(0))
    assert holds_sweep(organization=tenant) == 0  # no attempt to sweep; the hold is folded all the same
    assert _window(tenant) == (Decimal(0), Decimal("0.15"))


def test_a_settlement_near_a_hard_limit_is_folded_at_once(tenant: Organization, settings: Any) -> None:
    """More than half of a hard limit taken: the fold's wait would refuse calls that fit, so the
    settlement folds its holds itself; a roomier or soft budget waits for the background fold."""
    settings.LLM_BUDGET_FOLD_SECONDS = 3600
    budget_set(organization=tenant, scope="organization", period="day", limit_usd=Decimal(1), actor=TEST_ACTOR)
    _settle(tenant, _reserve(tenant, "0.40", "roomy"), "0.10")
    assert _window(tenant) == (Decimal("0.40"), Decimal(0))  # 0.40 of 1: waits for the fold
    _settle(tenant, _reserve(tenant, "0.30", "tight"), "0.20")  # 0.70 of 1 taken when it settles
    assert _window(tenant) == (Decimal(0), Decimal("0.30"))  # both holds folded, the waiting one too
    assert not BudgetHold.objects.exists()


def _succeeded(organization: Organization, attempt: UsageAttempt, cost: str) -> PendingSettlement:
    return organization, attempt, Settlement(status=AttemptStatus.SUCCEEDED, cost_usd=Decimal(cost))


def test_a_batch_of_settlements_folds_at_once_when_it_finds_a_hard_limit_more_than_half_taken(
    tenant: Organization, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """The gateway's batched settlements take the near-limit rule of a single one: calls reserved
    with room to spare, settled once others in flight have taken more than half of the limit, fold
    at once instead of leaving their holds counted whole until the background fold."""
    settings.LLM_BUDGET_FOLD_SECONDS = 3600
    budget_set(organization=tenant, scope="organization", period="day", limit_usd=Decimal(1), actor=TEST_ACTOR)
    roomy = [_reserve(tenant, "0.10", "a"), _reserve(tenant, "0.10", "b")]
    with django_capture_on_commit_callbacks() as queued:
        assert _settlements_write(tenant, [_succeeded(tenant, attempt, "0.01") for attempt in roomy]) == {
            attempt.pk for attempt in roomy
        }
    assert len(queued) == 1 and _window(tenant) == (Decimal("0.20"), Decimal(0))  # the fold waits

    late = _reserve(tenant, "0.25", "c")
    assert not late.near_a_hard_limit  # 0.45 of 1 held when it was reserved: its settlement is batched
    _reserve(tenant, "0.35", "in flight")  # 0.80 of 1 held now
    with django_capture_on_commit_callbacks() as queued:
        assert _settlements_write(tenant, [_succeeded(tenant, late, "0.05")]) == {late.pk}
    assert queued == []
    assert _window(tenant) == (Decimal("0.35"), Decimal("0.07"))  # every settled hold folded, a and b too
    assert _settlements_write(tenant, [_succeeded(tenant, late, "0.05")]) == set()  # settled once only
