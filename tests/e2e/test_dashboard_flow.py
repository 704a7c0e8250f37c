"""The dashboard in a real browser: an organization with a week of folded usage and two budgets; its
owner signs in, opens Dashboard from the navigation, the charts are drawn (uPlot canvases, no
console errors), the ranges switch, the numbers are in tables too, the CSV downloads; screenshots at
desktop and phone widths with nothing unlabeled and nothing wider than the phone."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from allauth.account.models import EmailAddress
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.accounts.models import User
from apps.apikeys.keys import key_generate, key_hash
from apps.apikeys.models import ApiKey
from apps.llm.budgets import usage_fold
from apps.llm.models import AttemptStatus, Budget, BudgetWindow, UsageAttempt
from apps.rbac.models import Membership, Role
from apps.tenants.connection import tenant_connection
from tests.conftest import LiveDb
from tests.e2e.conftest import PHONE, LiveServer, overflowing, screenshot, unlabeled_fields

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"e2e-dash-{RUN}"
PASSWORD = "a-long-enough-passphrase-42"
MODELS = ("gpt-4o-mini", "claude-haiku-4-5", "simulated-mini")


@pytest.fixture
def organization(live_db: LiveDb) -> Any:
    organization = live_db.organization(slug=SLUG, name="Dashboard Co")
    owner = User.objects.create_user(email=f"owner-{RUN}@dash.example", password=PASSWORD)
    EmailAddress.objects.create(user=owner, email=owner.email, verified=True, primary=True)
    Membership.objects.create(organization=organization, user=owner, role=Role.OWNER)
    keys = []
    for name in ("production backend", "nightly evals"):
        prefix, secret, _ = key_generate()
        keys.append(
            ApiKey.objects.create(
                organization=organization,
                name=name,
                prefix=prefix,
                secret_hash=key_hash(secret),
                scopes=["llm:invoke"],
                created_by_label=owner.email,
            )
        )
    now = timezone.now()
    rows = []
    for n in range(400):
        by_person = n % 7 == 0
        status = (
            AttemptStatus.FAILED if n % 23 == 0 else AttemptStatus.CACHE_HIT if n % 4 == 0 else AttemptStatus.SUCCEEDED
        )
        answered = status != AttemptStatus.FAILED
        rows.append(
            UsageAttempt(
                request_id=uuid.uuid4().hex,
                attempt=1,
                status=status,
                principal_kind="user" if by_person else "api_key",
                api_key_id=None if by_person else keys[n % 2].pk,
                user_id=owner.pk if by_person else None,
                model_name=MODELS[n % 3],
                provider="simulator",
                input_tokens=200 + 13 * (n % 40),
                output_tokens=50 + 7 * (n % 30),
                cost_usd=Decimal("0.0021") * (1 + n % 5) if status == AttemptStatus.SUCCEEDED else Decimal(0),
                saved_usd=Decimal("0.0021") if status == AttemptStatus.CACHE_HIT else Decimal(0),
                settled_at=now - dt.timedelta(minutes=25 * n),
                latency_ms=(300 + 97 * (n % 17)) if answered and status != AttemptStatus.CACHE_HIT else 3,
                cache_layer="l1" if status == AttemptStatus.CACHE_HIT else "",
                error_class="timeout" if not answered else "",
            )
        )
    with schema_context(organization.schema_name):
        UsageAttempt.objects.bulk_create(rows)
        daily = Budget.objects.create(scope="organization", period="day", limit_usd=Decimal(5), soft_percent=80)
        BudgetWindow.objects.create(
            budget=daily, period_start=now.date(), spent_usd=Decimal("4.2"), reserved_usd=Decimal("0.3")
        )
        Budget.objects.create(scope="key", scope_id=str(keys[0].pk), period="month", limit_usd=Decimal(200))
    usage_fold(organization=organization)
    tenant_connection().set_schema_to_public()
    yield organization, owner
    User.objects.filter(email__endswith="@dash.example").delete()


def test_the_dashboard_draws_its_charts_and_offers_its_numbers_as_text(
    page: Any, portal_server: LiveServer, organization: Any
) -> None:
    from playwright.sync_api import expect

    _organization, owner = organization
    problems: list[str] = []

    def console(message: Any) -> None:
        if message.type == "error":
            problems.append(f"{message.text} ({message.location.get('url', '')})")

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("response", lambda response: problems.append(response.url) if response.status >= 400 else None)

    page.goto(f"{portal_server.url}/accounts/login/")
    page.get_by_label("Email").fill(owner.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In", exact=True).click()
    page.wait_for_url(portal_server.organization_url(SLUG) + "/")
    page.get_by_role("navigation", name="Portal").get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()

    # Four charts, each a uPlot canvas inside a labelled image.
    expect(page.locator("[data-chart] canvas")).to_have_count(4)
    for chart in ("spend", "requests", "tokens", "latency"):
        plot = page.locator(f'[data-chart="{chart}"]')
        assert plot.get_attribute("role") == "img" and plot.get_attribute("aria-label")
        assert plot.locator("canvas").bounding_box()["width"] > 200
    expect(page.get_by_role("heading", name="By API key")).to_be_visible()
    expect(page.get_by_role("rowheader", name="production backend")).to_be_visible()
    expect(page.get_by_role("rowheader", name=owner.email)).to_be_visible()
    expect(page.locator("meter")).to_have_count(2)
    expect(page.get_by_text("Past the soft limit")).to_be_visible()
    assert unlabeled_fields(page) == []
    screenshot(page, "dashboard")
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(300)  # the charts follow their containers' width
    assert overflowing(page) <= 0
    assert page.locator('[data-chart="spend"] canvas').bounding_box()["width"] <= PHONE["width"]
    page.set_viewport_size({"width": 1280, "height": 800})
    # The charts' numbers, hour by hour, as a table (what a screen reader reads).
    page.get_by_text("The numbers per hour as a table").click()
    expect(page.locator("details.usage-table-toggle tbody tr")).to_have_count(7 * 24)

    page.get_by_role("navigation", name="Range").get_by_role("link", name="Last 90 days").click()
    expect(page.get_by_role("heading", name="Last 90 days")).to_be_visible()
    expect(page.locator("[data-chart] canvas")).to_have_count(4)
    screenshot(page, "dashboard-90-days")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download by model (CSV)").click()
    assert download.value.suggested_filename == f"usage-{SLUG}-90d-by-model.csv"
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert text.startswith("range_start_utc,range_end_utc,model,requests,")
    assert all(model in text for model in MODELS)
    assert problems == []
