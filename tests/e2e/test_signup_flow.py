"""A new customer in a real browser: sign up → verify from the development mailbox → land in the
organization's portal, signed in, the organization usable → sign out → sign in on the platform
host → handed over to the organization's host."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from apps.accounts.models import User
from apps.apikeys.services import apikey_create
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.e2e.conftest import LiveServer, screenshot, unlabeled_fields
from tests.factories import TEST_ACTOR

pytestmark = pytest.mark.integration

# New names each run: allauth's per-address limits (one verification mail per 3 minutes) live in
# Redis across runs, and a run that crashed must not leave its slug taken.
RUN = uuid.uuid4().hex[:8]
EMAIL = f"founder-{RUN}@e2e-acme.example"
PASSWORD = "a-long-enough-passphrase-42"
SLUG = f"e2e-{RUN}"


@pytest.fixture
def cleanup(live_db: LiveDb) -> Any:
    yield
    tenant_connection().set_schema_to_public()
    for organization in Organization.objects.filter(slug=SLUG):
        live_db.track(organization)
    User.objects.filter(email=EMAIL).delete()


def test_sign_up_verify_enter_sign_out_and_sign_in_again(
    page: Any, portal_server: LiveServer, live_db: LiveDb, cleanup: None
) -> None:
    from playwright.sync_api import expect

    home_url = portal_server.organization_url(SLUG) + "/"

    page.goto(f"{portal_server.url}/accounts/signup/")
    screenshot(page, "signup")
    assert unlabeled_fields(page) == []
    page.get_by_label("Work email").fill(EMAIL)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password (again)").fill(PASSWORD)
    page.get_by_label("Organization name").fill("Acme End to End")
    page.get_by_label("Organization address").fill(SLUG)
    expect(page.locator("#slug-check")).to_contain_text("is free")  # HTMX asked the server
    page.get_by_role("button", name="Sign Up").click()
    expect(page.get_by_role("heading", name="Verify Your Email Address")).to_be_visible()

    page.goto(f"{portal_server.url}/dev/mail/?to={EMAIL}")
    screenshot(page, "mailbox")
    page.locator('a[href*="/accounts/confirm-email/"]').first.click()
    page.get_by_role("button", name="Confirm").click()

    page.wait_for_url(home_url)
    expect(page.get_by_role("heading", name="Acme End to End", level=1)).to_be_visible()
    expect(page.get_by_text(f"cognitionos apikey create --tenant {SLUG}")).to_be_visible()
    screenshot(page, "home")

    # The organization is usable: a key of it answers on the API at once.
    tenant_connection().set_schema_to_public()
    organization = Organization.objects.get(slug=SLUG)
    key = apikey_create(organization=organization, name="e2e", actor=TEST_ACTOR).key
    models = httpx.get(
        f"http://127.0.0.1:{portal_server.port}/v1/models",
        headers={"Authorization": f"Bearer {key}", "Host": "localhost"},
        timeout=10,
    )
    assert models.status_code == 200, models.text

    page.locator("summary", has_text=f"Account menu for {EMAIL}").click()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign In")).to_be_visible()
    page.goto(home_url)
    expect(page.get_by_role("heading", name="Sign in to Acme End to End")).to_be_visible()
    screenshot(page, "organization-signin")

    page.goto(f"{portal_server.url}/accounts/login/")
    screenshot(page, "signin")
    assert unlabeled_fields(page) == []
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In", exact=True).click()
    page.wait_for_url(home_url)
    expect(page.get_by_role("heading", name="Acme End to End", level=1)).to_be_visible()
