"""The organization's settings in a real browser: an owner sets a monthly budget → adds an OpenAI
key and tests it against the fake provider (the answer arrives without a reload) → allows one model
and a default policy on the Model settings page; each page at desktop and phone widths."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from apps.accounts.models import User
from apps.accounts.services import email_verified_ensure
from apps.llm.models import Budget, LlmSettings
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.e2e.conftest import DESKTOP, PHONE, LiveServer, overflowing, screenshot, unlabeled_fields
from tests.factories import organization_make
from tests.support.fake_provider import FakeProvider

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"e2e-settings-{RUN}"
OWNER = f"owner-{RUN}@e2e-settings.example"
PASSWORD = "a-long-enough-passphrase-42"
OPENAI_KEY = f"sk-e2e-{RUN}-Secret-Key-Value-7q8r"


@pytest.fixture
def organization(live_db: LiveDb) -> Iterator[Organization]:
    created = organization_make(slug=SLUG, name="Settings End to End", plan_code="pro", owner_email=OWNER)
    live_db.track(created)
    tenant_connection().set_schema_to_public()
    owner = User.objects.get(email=OWNER)
    owner.set_password(PASSWORD)
    owner.save()
    email_verified_ensure(user=owner)
    tenant_connection().set_schema_to_public()
    yield created
    tenant_connection().set_schema_to_public()
    User.objects.filter(email=OWNER).delete()


def _fits_a_phone(page: Any) -> None:
    assert unlabeled_fields(page) == []
    page.set_viewport_size(PHONE)
    try:
        assert overflowing(page) == 0
        assert unlabeled_fields(page) == []
    finally:
        page.set_viewport_size(DESKTOP)


def _open(page: Any, link: str) -> None:
    from playwright.sync_api import expect

    page.get_by_role("navigation", name="Portal").get_by_role("link", name=link, exact=True).click()
    expect(page.get_by_role("heading", name=link, level=1)).to_be_visible()


def test_set_a_budget_add_and_test_a_provider_key_and_change_model_settings(
    page: Any, provider_server: LiveServer, organization: Organization, fake_provider: FakeProvider
) -> None:
    from playwright.sync_api import expect

    origin = provider_server.organization_url(SLUG)
    page.goto(f"{origin}/accounts/login/")
    page.get_by_label("Email").fill(OWNER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In", exact=True).click()
    page.wait_for_url(f"{origin}/")

    # Budgets: the empty state says what to do; a monthly organization budget is set.
    _open(page, "Budgets")
    expect(page.get_by_text("No budgets yet")).to_be_visible()
    _fits_a_phone(page)
    page.get_by_label("Applies to").select_option(label="The whole organization")
    page.get_by_label("Period").select_option("month")
    page.get_by_label("Limit (USD)").fill("-5")
    page.get_by_role("button", name="Save budget").click()
    expect(page.locator("#id_limit_usd_error")).to_contain_text("greater than or equal to 0")
    page.get_by_label("Limit (USD)").fill("50")
    page.get_by_label("Soft limit (% of the limit)").fill("80")
    page.get_by_role("button", name="Save budget").click()
    expect(page.get_by_text("Budget saved")).to_be_visible()
    row = page.locator("tbody tr", has_text="Organization")
    expect(row).to_contain_text("$50.00")
    expect(row).to_contain_text("warn at 80%")
    _fits_a_phone(page)
    screenshot(page, "budgets")

    # Provider keys: an OpenAI key is added (a password field), shown by its last four characters
    # only, and tested against the fake provider without a reload.
    _open(page, "Provider keys")
    expect(page.get_by_text("No provider keys yet")).to_be_visible()
    _fits_a_phone(page)
    page.get_by_label("Provider").select_option(label="OpenAI")
    assert page.get_by_label("API key").get_attribute("type") == "password"
    page.get_by_label("API key").fill(OPENAI_KEY)
    page.get_by_role("button", name="Save key").click()
    expect(page.get_by_text("OpenAI key saved")).to_be_visible()
    expect(page.locator("tbody tr", has_text="OpenAI")).to_contain_text(f"…{OPENAI_KEY[-4:]}")
    calls_before = len(fake_provider.calls)
    page.get_by_role("button", name="Test the OpenAI key").click()
    expect(page.locator("#test-openai")).to_contain_text("Works")
    assert len(fake_provider.calls) == calls_before + 1
    assert OPENAI_KEY not in page.content()
    _fits_a_phone(page)
    screenshot(page, "provider-keys")

    # Model settings: one model allowed, a default policy, a shorter retention.
    _open(page, "Model settings")
    _fits_a_phone(page)
    page.get_by_label("simulated-mini").check()
    page.get_by_label("Default policy").select_option("cheapest")
    page.get_by_label("Retention (days)").fill("0")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#id_retention_days_error")).to_contain_text("greater than or equal to 1")
    page.get_by_label("Retention (days)").fill("14")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Model settings saved")).to_be_visible()
    expect(page.get_by_label("simulated-mini")).to_be_checked()
    _fits_a_phone(page)
    screenshot(page, "model-settings")

    with organization_schema(organization):
        budget = Budget.objects.get()
        assert (budget.scope, budget.period, budget.soft_percent) == ("organization", "month", 80)
        assert budget.limit_usd == Decimal(50)
        saved = LlmSettings.objects.get()
        assert (saved.allowed_models, saved.default_policy, saved.retention_days) == (
            ["simulated-mini"],
            "cheapest",
            14,
        )
