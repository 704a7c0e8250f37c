"""Billing end to end in a real browser, against the web server, the fake provider and the fake Stripe:
a Free organization that has used its included usage is refused in the playground (the refusal
names the plan's limit and links to the plan page) → it upgrades through (the fake) Checkout →
Stripe's signed webhook reaches the platform → the next playground call succeeds → the plan page
shows the new plan and the usage. Screenshots at desktop and phone widths."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from allauth.account.models import EmailAddress
from django.conf import settings
from django.utils import timezone

from apps.accounts.models import User
from apps.billing.models import Plan, PlanVersion
from apps.llm.budgets import usage_fold
from apps.llm.models import Budget, BudgetWindow
from apps.llm.platform.models import UsageRollup
from apps.ops.management.commands.up import web_hosts
from apps.rbac.models import Membership, Role
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.e2e.conftest import PHONE, LiveServer, overflowing, screenshot, unlabeled_fields
from tests.factories import organization_make, organization_purge, plan_make, plan_purge
from tests.support.fake_provider import ANSWER_PREFIX, FakeProvider
from tests.support.fake_stripe import FakeStripe
from tests.support.processes import free_port, web_serving

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"e2e-billing-{RUN}"
EMAIL = f"owner-{RUN}@billing.example"
PASSWORD = "a-long-enough-passphrase-42"
WEBHOOK_SECRET = "whsec_e2e_billing"
PLAN_CODE = f"team-{RUN}"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as server:
        yield server


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def stripe_fake(port: int) -> Iterator[FakeStripe]:
    # Stripe sends its webhooks to the platform host's endpoint (apps.billing.urls).
    with FakeStripe(
        webhook_url=f"http://localhost:{port}/billing/stripe/webhook/", webhook_secret=WEBHOOK_SECRET
    ) as fake:
        yield fake


@pytest.fixture
def server(
    live_db: LiveDb, fake: FakeProvider, stripe_fake: FakeStripe, port: int, tmp_path: Path
) -> Iterator[LiveServer]:
    env = {
        "COGNITIONOS_MAILBOX_DIR": str(tmp_path / "mail"),
        "WEB_PROCESSES": "1",
        "WEB_THREADS": "4",
        "OPENAI_API_KEY": "sk-test-platform",
        "OPENAI_BASE_URL": fake.openai_base_url,
        "ANTHROPIC_API_KEY": "sk-ant-test-platform",
        "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
        "STRIPE_SECRET_KEY": "sk_test_cognitionosE2eBilling0001",  # shaped as dj-stripe expects
        "STRIPE_API_BASE": stripe_fake.api_base,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_MAX_NETWORK_RETRIES": "0",
    }
    with web_serving(port=port, env=env, hosts=web_hosts("127.0.0.1")):
        yield LiveServer(port, tmp_path / "mail")


@pytest.fixture
def team_plan(live_db: LiveDb, stripe_fake: FakeStripe) -> Iterator[Plan]:
    """A paid plan on sale through Checkout (its Stripe price is the fake's): $20 a month, $50 of
    usage included, overage billed."""
    price = stripe_fake.price_create(f"price_team_{RUN}", unit_amount=2000)
    plan = plan_make(
        code=PLAN_CODE,
        name="Team",
        base_price_usd=Decimal("20.00"),
        included_usage_usd=Decimal("50.00"),
        stripe_price_id=price,
    )
    Plan.objects.filter(pk=plan.pk).update(public=True, position=1)
    yield plan
    tenant_connection().set_schema_to_public()
    plan_purge(plan)


@pytest.fixture
def organization(live_db: LiveDb, team_plan: Plan) -> Iterator[Organization]:
    """A Free organization whose owner signs in; this month it has used all but a sliver of Free's
    included usage (less than one call's worst case), as the ledger's budget window and the public
    rollups record it."""
    organization = organization_make(slug=SLUG, name="Billing Co", plan_code="free")
    user = User.objects.create_user(email=EMAIL, password=PASSWORD)
    EmailAddress.objects.create(user=user, email=EMAIL, verified=True, primary=True)
    Membership.objects.create(organization=organization, user=user, role=Role.OWNER)
    included = PlanVersion.objects.filter(plan__code="free").order_by("-number").first()
    assert included is not None
    used = included.included_usage_usd - Decimal("0.00000100")
    month = timezone.now().date().replace(day=1)
    with organization_schema(organization):
        plan_budget = Budget.objects.get(scope="plan")
        assert plan_budget.limit_usd == included.included_usage_usd
        BudgetWindow.objects.update_or_create(budget=plan_budget, period_start=month, defaults={"spent_usd": used})
    UsageRollup.objects.create(
        organization=organization,
        day=timezone.now().date(),
        model_name="gpt-4o-mini",
        requests=4000,
        input_tokens=9_000_000,
        output_tokens=2_000_000,
        cost_usd=used,
    )
    tenant_connection().set_schema_to_public()
    yield organization
    tenant_connection().set_schema_to_public()
    organization_purge(organization)
    User.objects.filter(email=EMAIL).delete()


def _wider_than_window(page: Any) -> list[str]:
    """The innermost elements that reach past the window's right edge (what makes a phone scroll)."""
    return list(
        page.evaluate(
            """() => [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                .filter(e => ![...e.children].some(c => c.getBoundingClientRect().right > window.innerWidth + 1))
                .slice(0, 8)
                .map(e => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)"""
        )
    )


def _run_prompt(page: Any, text: str) -> None:
    page.get_by_role("navigation", name="Portal").get_by_role("link", name="Playground").click()
    page.get_by_label("Model or policy").select_option("gpt-4o-mini")
    page.get_by_label("Message 1", exact=True).fill(text)
    page.get_by_role("button", name="Run").click()


def test_a_free_organization_upgrades_through_checkout_and_its_calls_go_on(
    page: Any, server: LiveServer, fake: FakeProvider, stripe_fake: FakeStripe, organization: Organization
) -> None:
    from playwright.sync_api import expect

    page.goto(f"{server.url}/accounts/login/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In", exact=True).click()
    page.wait_for_url(server.organization_url(SLUG) + "/")

    # 1. Free's included usage is spent: the playground's call is refused, naming the plan's limit.
    _run_prompt(page, "One more question")
    refusal = page.locator("#refusal")
    expect(refusal).to_be_visible()
    expect(refusal).to_contain_text("Plan limit reached")
    expect(refusal).to_contain_text(re.compile(r"included usage this month \(\$5\.00\d*\) is spent"))
    expect(page.locator("#answer")).to_have_text("")
    screenshot(page, "billing-1-refused")

    # 2. Its link opens the plan page: Free, usage at the included amount, the plans to move to.
    refusal.get_by_role("link", name="See plans").click()
    expect(page.get_by_role("heading", name="Plan and billing", level=1)).to_be_visible()
    expect(page.get_by_role("heading", name="Current plan: Free")).to_be_visible()
    expect(page.get_by_text("100% of the included usage used")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("included usage for this period is used up")
    expect(page.locator("[data-billing-chart] canvas")).to_have_count(1)  # uPlot drew the chart
    assert unlabeled_fields(page) == []
    expect(page.get_by_role("button", name="Manage billing")).to_have_count(0)  # no Stripe customer yet
    screenshot(page, "billing-2-free")
    page.set_viewport_size(PHONE)
    assert overflowing(page) <= 0, _wider_than_window(page)
    page.set_viewport_size({"width": 1280, "height": 800})

    # 3. Upgrade: Checkout (the fake's page pays on visit) and back to the plan page.
    # The fake's payment page sends Stripe's events before it redirects: on a busy machine that can
    # take longer than a click's default wait for its navigation.
    page.get_by_role("button", name="Upgrade to Team").click(no_wait_after=True)
    page.wait_for_url(
        re.compile(re.escape(server.organization_url(SLUG)) + r"/billing/\?checkout=done"), timeout=90_000
    )
    expect(page.get_by_role("status").filter(has_text="Payment received by Stripe")).to_be_visible()

    # 4. Stripe's webhook arrives (signed, on the platform host) and moves the organization to Team.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        organization.refresh_from_db()
        if organization.plan.code == PLAN_CODE:
            break
        time.sleep(0.2)
    assert organization.plan.code == PLAN_CODE, stripe_fake.deliveries
    assert any(status == 200 for _id, _type, status in stripe_fake.deliveries), stripe_fake.deliveries
    # The process that took the webhook forgot its cached plan at once; the server's other processes
    # see the change within TENANT_RESOLUTION_CACHE_SECONDS, as documented (docs/billing.md).
    time.sleep(settings.TENANT_RESOLUTION_CACHE_SECONDS)

    # 5. The next call goes through: Team bills usage past what it includes instead of stopping.
    _run_prompt(page, "Now it works")
    expect(page.locator("#answer")).to_have_text(ANSWER_PREFIX + "Now it works")
    expect(page.locator("#refusal")).to_be_hidden()

    # 6. The plan page: Team, the new call in this period's usage, Manage billing, the paid invoice.
    usage_fold(organization=organization)  # what the beat's fold does every minute
    tenant_connection().set_schema_to_public()
    page.get_by_role("navigation", name="Portal").get_by_role("link", name="Plan and billing").click()
    expect(page.get_by_role("heading", name="Current plan: Team")).to_be_visible()
    expect(page.get_by_role("button", name="Manage billing")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("^Upgrade to"))).to_have_count(0)
    # Team's period started at the purchase: Free's usage of this morning is not counted against it.
    expect(page.get_by_text("of $50.00 included (0%)")).to_be_visible()
    requests = page.locator(".usage-stat").filter(has_text="Requests").locator("dd")
    expect(requests).to_have_text("1")
    expect(page.get_by_role("heading", name="Invoices")).to_be_visible()
    expect(page.locator("table").filter(has_text="Paid")).to_have_count(1)
    screenshot(page, "billing-3-team")
    page.set_viewport_size(PHONE)
    assert overflowing(page) <= 0, _wider_than_window(page)
