"""The request log in a real browser: an organization with real calls (their prompts kept) and a
call that failed over to a fallback; its owner opens Request log from the navigation, filters by
status and by model, opens a call's detail and reads its attempts, reservation against settlement
and its prompt and answer; screenshots at desktop and phone widths, nothing unlabeled, nothing
wider than the phone."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from allauth.account.models import EmailAddress
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.llm.calls import CallSource, chat_call_parse, chat_complete
from apps.llm.models import UsageAttempt
from apps.rbac.models import Membership, Role
from apps.tenants.connection import tenant_connection
from tests.conftest import LiveDb
from tests.e2e.conftest import PHONE, LiveServer, overflowing, screenshot, unlabeled_fields

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"e2e-log-{RUN}"
PASSWORD = "a-long-enough-passphrase-42"
FAILED_CALL = f"fallback{RUN}"


@pytest.fixture
def organization(live_db: LiveDb) -> Any:
    organization = live_db.organization(slug=SLUG, name="Request Log Co")
    owner = User.objects.create_user(email=f"owner-{RUN}@log.example", password=PASSWORD)
    EmailAddress.objects.create(user=owner, email=owner.email, verified=True, primary=True)
    Membership.objects.create(organization=organization, user=owner, role=Role.OWNER)
    principal = Principal(kind="user", id=str(owner.pk), label=owner.email)
    asked = []
    with schema_context(organization.schema_name):
        for text in ("Summarize <the> quarterly report", "Translate 'bonjour' to English", "List three colors"):
            body = {"model": "simulated-mini", "messages": [{"role": "user", "content": text}]}
            outcome = chat_complete(
                organization=organization, principal=principal, call=chat_call_parse(body), source=CallSource.PLAYGROUND
            )
            asked.append(outcome.request_id)
        now = timezone.now()
        common: dict[str, Any] = {
            "principal_kind": "api_key",
            "principal_label": "nightly evals (cos_x1)",
            "api_key_id": 77,
            "model_requested": "policy:cheapest",
            "source": CallSource.JOB,
            "settled_at": now,
            "rolled_up": True,
        }
        UsageAttempt.objects.bulk_create(
            [
                UsageAttempt(
                    request_id=FAILED_CALL,
                    attempt=1,
                    status="failed",
                    created_at=now - dt.timedelta(hours=1),
                    model_name="gpt-4o-mini",
                    provider="openai",
                    reserved_usd=Decimal("0.0009"),
                    latency_ms=1200,
                    error_class="RateLimitError",
                    **common,
                ),
                UsageAttempt(
                    request_id=FAILED_CALL,
                    attempt=2,
                    status="failed",
                    created_at=now - dt.timedelta(hours=1) + dt.timedelta(seconds=1),
                    model_name="claude-3-5-haiku",
                    provider="anthropic",
                    reserved_usd=Decimal("0.0011"),
                    latency_ms=30000,
                    error_class="APITimeoutError",
                    **common,
                ),
            ]
        )
    tenant_connection().set_schema_to_public()
    yield organization, owner, asked
    User.objects.filter(email__endswith="@log.example").delete()


def test_filter_the_request_log_and_open_a_calls_detail(
    page: Any, portal_server: LiveServer, organization: Any
) -> None:
    from playwright.sync_api import expect

    _organization, owner, asked = organization
    page.goto(f"{portal_server.url}/accounts/login/")
    page.get_by_label("Email").fill(owner.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In", exact=True).click()
    page.wait_for_url(portal_server.organization_url(SLUG) + "/")
    page.get_by_role("navigation", name="Portal").get_by_role("link", name="Request log").click()
    expect(page.get_by_role("heading", name="Request log", level=1)).to_be_visible()
    rows = page.locator("table.request-log tbody tr")
    expect(rows).to_have_count(5)  # three calls, and the failed call's two attempts
    expect(rows.last).to_contain_text("RateLimitError")  # the oldest: the failed call's first attempt
    assert unlabeled_fields(page) == []
    screenshot(page, "request-log")
    page.set_viewport_size(PHONE)
    assert overflowing(page) <= 0
    page.set_viewport_size({"width": 1280, "height": 800})

    # Only the failures.
    page.get_by_label("Status").select_option(label="Failed")
    page.get_by_role("button", name="Apply filters").click()
    expect(rows).to_have_count(2)
    expect(page.get_by_text("policy:cheapest →").first).to_be_visible()
    # A bad filter is refused at its field.
    page.get_by_label("Request id starts with").fill("ab")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_text("Some filters are not valid")).to_be_visible()
    expect(page.locator(".field__error", has_text="at least 4 characters")).to_be_visible()
    page.get_by_role("link", name="Clear filters").click()
    expect(rows).to_have_count(5)

    # A model, then the call.
    page.get_by_label("Model that answered").fill("simulated-mini")
    page.get_by_role("button", name="Apply filters").click()
    expect(rows).to_have_count(3)
    page.get_by_role("link", name=f"Call {asked[0]}").click()
    expect(page.get_by_role("heading", name=f"Call {asked[0]}")).to_be_visible()
    expect(page.get_by_role("heading", name="Prompt and answer")).to_be_visible()
    expect(page.locator("pre.call-content").first).to_contain_text("Summarize <the> quarterly report")
    expect(page.get_by_text("Reserved from budgets")).to_be_visible()
    assert unlabeled_fields(page) == []
    screenshot(page, "request-detail")
    page.set_viewport_size(PHONE)
    assert overflowing(page) <= 0
    page.set_viewport_size({"width": 1280, "height": 800})

    # The failed call: two attempts, a fallback, nothing kept.
    page.goto(f"{portal_server.organization_url(SLUG)}/requests/{FAILED_CALL}/")
    expect(page.locator("table tbody tr")).to_have_count(2)
    expect(page.get_by_text("Not kept for this call")).to_be_visible()
    screenshot(page, "request-detail-failed")
