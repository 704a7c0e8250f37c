"""A Free organization in a real browser: the owner tries to add their own provider key, which Free
doesn't include — the page says what the plan lacks and links to the plan page; the budgets page
lists Free's included usage as the plan's budget, which the owner can't change or remove."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from apps.accounts.models import User
from apps.accounts.services import email_verified_ensure
from apps.llm.plan_budget import plan_budget_sync
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.e2e.conftest import DESKTOP, PHONE, LiveServer, overflowing, screenshot
from tests.factories import organization_make

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"e2e-free-{RUN}"
OWNER = f"owner-{RUN}@e2e-free.example"
PASSWORD = "a-long-enough-passphrase-42"


@pytest.fixture
def free_team(live_db: LiveDb) -> Any:
    organization = organization_make(slug=SLUG, name="Free End to End", plan_code="free", owner_email=OWNER)
    live_db.track(organization)
    tenant_connection().set_schema_to_public()
    plan_budget_sync(organization=organization)
    tenant_connection().set_schema_to_public()
    owner = User.objects.get(email=OWNER)
    owner.set_password(PASSWORD)
    owner.save()
    email_verified_ensure(user=owner)
    yield organization
    tenant_connection().set_schema_to_public()
    User.objects.filter(email=OWNER).delete()


def test_the_plan_says_what_it_lacks_and_owns_its_budget(
    page: Any, portal_server: LiveServer, free_team: Organization
) -> None:
    from playwright.sync_api import expect

    origin = portal_server.organization_url(SLUG)
    page.goto(f"{origin}/accounts/login/")
    page.get_by_label("Email").fill(OWNER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In", exact=True).click()
    page.wait_for_url(f"{origin}/")

    page.goto(f"{origin}/settings/providers/")
    page.get_by_label("API key").fill("sk-own-key-1234567890")
    page.get_by_role("button", name="Save key").click()
    expect(page.get_by_role("heading", name="Not in your plan", level=1)).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("Your plan (Free) does not include bring-your-own provider keys.")
    page.set_viewport_size(PHONE)
    assert overflowing(page) == 0
    page.set_viewport_size(DESKTOP)
    screenshot(page, "plan-refused")

    page.goto(f"{origin}/budgets/")
    row = page.locator("tbody tr", has_text="Plan: included usage")
    expect(row).to_contain_text("$5.00")
    expect(row).to_contain_text("Set by your plan")
    expect(row.get_by_role("button", name="Remove")).to_have_count(0)
    screenshot(page, "plan-budget")
