"""Budgets and rate limits under real concurrency: committed data, many threads and processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from apps.accounts.principals import Principal
from apps.billing.selectors import plan_limit
from apps.llm.budgets import budget_holds_fold
from apps.llm.calls import LlmRefusal, chat_call_parse, chat_complete
from apps.llm.models import AttemptStatus, BudgetHold, BudgetWindow, UsageAttempt
from apps.llm.services import budget_set
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.factories import TEST_ACTOR
from tests.support.processes import database_url_for_subprocess

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
LIMIT = Decimal("0.0010")


@pytest.mark.parametrize("fold_seconds", [0.0, 0.01], ids=["folded at once", "folded in the background"])
def test_hundreds_of_concurrent_calls_never_overspend_a_hard_budget(
    live_db: LiveDb, settings: Any, fold_seconds: float
) -> None:
    """Settled holds folded into the budget window at once, or by the background fold while the
    other calls reserve: either way the hard limit is never passed and the window ends exact."""
    settings.LLM_SIMULATOR_LATENCY_MS = 20
    settings.LLM_BUDGET_FOLD_SECONDS = fold_seconds
    organization = live_db.organization(slug="frugal", name="Frugal")
    Organization.objects.filter(pk=organization.pk).update(
        plan=organization.plan.__class__.objects.get(code="enterprise")
    )
    organization.refresh_from_db()
    budget_set(
        organization=organization, scope="organization", period="day", limit_usd=LIMIT, hard=True, actor=TEST_ACTOR
    )
    principal = Principal(kind="api_key", id="1", label="load test")

    def one_call(number: int) -> str:
        tenant_connection().set_tenant(organization)
        try:
            call = chat_call_parse(
                {
                    "model": "simulated-mini",
                    "max_tokens": 100,
                    "cache": {"skip": True},
                    "messages": [{"role": "user", "content": f"question {number}"}],
                }
            )
            chat_complete(organization=organization, principal=principal, call=call)
            return "ok"
        except LlmRefusal as error:
            return error.code
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = list(pool.map(one_call, range(200)))
    budget_holds_fold()  # what the background fold has not taken yet

    assert outcomes.count("ok") > 10 and outcomes.count("budget_exceeded") > 10
    assert set(outcomes) == {"ok", "budget_exceeded"}
    with schema_context(organization.schema_name):
        window = BudgetWindow.objects.get()
        spent = sum(a.cost_usd for a in UsageAttempt.objects.filter(status=AttemptStatus.SUCCEEDED))
        assert window.reserved_usd == 0
        assert not BudgetHold.objects.exists()
        assert window.spent_usd == spent <= LIMIT
        assert UsageAttempt.objects.filter(status=AttemptStatus.SUCCEEDED).count() == outcomes.count("ok")


RATE_SCRIPT = """
import json, os, sys
import django
django.setup()
from apps.llm.ratelimits import RateLimited, rate_limit_take
from apps.tenants.models import Organization
organization = Organization.objects.select_related("plan").get(slug=sys.argv[1])
allowed = refused = 0
for _ in range(int(sys.argv[2])):
    try:
        rate_limit_take(organization=organization, api_key_id=None, tokens=1)
        allowed += 1
    except RateLimited:
        refused += 1
print(json.dumps({"allowed": allowed, "refused": refused}))
"""


def test_rate_limits_hold_across_processes(live_db: LiveDb) -> None:
    organization = live_db.organization(slug="throttled")
    rpm = plan_limit(organization, "requests_per_minute")
    if time.time() % 60 > 50:  # both processes must count in the same minute window
        time.sleep(61 - time.time() % 60)
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "DJANGO_SETTINGS_MODULE": "cognitionos.settings.test",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", RATE_SCRIPT, organization.slug, str(rpm)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [json.loads(process.communicate(timeout=120)[0]) for process in processes]
    assert sum(r["allowed"] for r in results) == rpm
    assert sum(r["refused"] for r in results) == rpm
