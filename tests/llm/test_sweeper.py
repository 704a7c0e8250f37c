"""The beat-driven sweeper on a real worker: an attempt whose process died is settled from its hold."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.accounts.principals import Principal
from apps.llm.budgets import Spender, attempt_reserve
from apps.llm.models import AttemptStatus, BudgetWindow, UsageAttempt
from apps.llm.services import budget_set
from apps.llm.tasks import llm_holds_sweep_all
from tests.conftest import LiveDb
from tests.factories import TEST_ACTOR
from tests.support.worker import celery_worker

pytestmark = pytest.mark.integration


def test_the_sweeper_settles_holds_whose_process_died(live_db: LiveDb) -> None:
    organization = live_db.organization(slug="abandoned")
    budget_set(
        organization=organization, scope="organization", period="day", limit_usd=Decimal(1), hard=True, actor=TEST_ACTOR
    )
    spender = Spender(organization=organization, principal=Principal(kind="api_key", id="1", label="k"))
    with schema_context(organization.schema_name):
        attempt = attempt_reserve(
            spender=spender,
            request_id="died-mid-call",
            attempt=1,
            model_name="gpt-4o-mini",
            provider="openai",
            amount_usd=Decimal("0.2"),
            max_cost_usd=None,
        )
        UsageAttempt.objects.filter(pk=attempt.pk).update(hold_expires_at=timezone.now() - dt.timedelta(seconds=1))

    with celery_worker(concurrency=2):
        llm_holds_sweep_all.delay()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with schema_context(organization.schema_name):
                if UsageAttempt.objects.get(pk=attempt.pk).status != AttemptStatus.RESERVED:
                    break
            time.sleep(0.2)

    with schema_context(organization.schema_name):
        swept = UsageAttempt.objects.get(pk=attempt.pk)
        assert (swept.status, swept.cost_usd, swept.error_class) == (AttemptStatus.SWEPT, Decimal("0.2"), "abandoned")
        window = BudgetWindow.objects.get()
        assert (window.reserved_usd, window.spent_usd) == (Decimal(0), Decimal("0.2"))
