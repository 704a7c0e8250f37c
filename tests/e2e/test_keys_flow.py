"""A new customer's first key, in a real browser: sign up → API keys page → create a key with
llm:invoke → read it off the page (shown once) → call /v1/chat/completions with the openai SDK →
the audit log page shows the key's creation."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from openai import OpenAI

from apps.accounts.models import User
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.e2e.conftest import LiveServer, overflowing, screenshot, unlabeled_fields

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
EMAIL = f"keys-{RUN}@e2e-acme.example"
PASSWORD = "a-long-enough-passphrase-42"
SLUG = f"e2e-keys-{RUN}"


@pytest.fixture
def cleanup(live_db: LiveDb) -> Any:
    yield
    tenant_connection().set_schema_to_public()
    for organization in Organization.objects.filter(slug=SLUG):
        live_db.track(organization)
    User.objects.filter(email=EMAIL).delete()


def sign_up(page: Any, server: LiveServer) -> None:
    """Sign up and verify by the development mailbox; ends on the organization's home page."""
    from playwright.sync_api import expect

    page.goto(f"{server.url}/accounts/signup/")
    page.get_by_label("Work email").fill(EMAIL)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password (again)").fill(PASSWORD)
    page.get_by_label("Organization name").fill("Keys End to End")
    page.get_by_label("Organization address").fill(SLUG)
    expect(page.locator("#slug-check")).to_contain_text("is free")
    page.get_by_role("button", name="Sign Up").click()
    expect(page.get_by_role("heading", name="Verify Your Email Address")).to_be_visible()
    page.goto(f"{server.url}/dev/mail/?to={EMAIL}")
    page.locator('a[href*="/accounts/confirm-email/"]').first.click()
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url(server.organization_url(SLUG) + "/")


def test_create_a_key_in_the_portal_and_call_the_gateway_with_it(
    page: Any, portal_server: LiveServer, live_db: LiveDb, cleanup: None
) -> None:
    from playwright.sync_api import expect

    sign_up(page, portal_server)
    page.get_by_role("navigation", name="Portal").get_by_role("link", name="API keys").click()
    expect(page.get_by_role("heading", name="API keys", level=1)).to_be_visible()
    expect(page.get_by_text("No keys yet.")).to_be_visible()
    assert unlabeled_fields(page) == []

    page.get_by_label("Name").fill("first script")
    page.get_by_label("llm:invoke").check()
    page.get_by_label("Expires").select_option(label="In 30 days")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("heading", name="Your new key “first script”")).to_be_visible()
    key = page.get_by_label("New API key").input_value()
    base_url = page.locator("#api-base-url").inner_text()
    assert key.startswith("cos_")
    assert base_url == f"http://localhost:{portal_server.port}/v1"
    page.get_by_role("button", name="Copy key").click()
    expect(page.locator("#new-key-copied")).not_to_be_empty()
    expect(page.locator("tbody tr", has_text="first script")).to_have_count(1)
    assert unlabeled_fields(page) == []
    assert overflowing(page) <= 0
    screenshot(page, "keys-created")
    page.set_viewport_size({"width": 390, "height": 844})
    assert overflowing(page) <= 0
    page.set_viewport_size({"width": 1280, "height": 800})

    client = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)
    answer = client.chat.completions.create(
        model="simulated-mini", messages=[{"role": "user", "content": "Say hello to the new key"}]
    )
    assert answer.choices[0].message.content

    # Shown once: a fresh visit lists the key by its prefix only.
    page.goto(portal_server.organization_url(SLUG) + "/keys/")
    assert key not in page.content()
    expect(page.locator("tbody tr", has_text="first script")).to_have_count(1)
    screenshot(page, "keys")

    page.get_by_role("navigation", name="Portal").get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", name="Audit log", level=1)).to_be_visible()
    expect(page.get_by_role("cell", name="apikey.created")).to_be_visible()
    assert unlabeled_fields(page) == []
    page.get_by_label("Action").fill("apikey.created")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.get_by_role("cell", name=EMAIL)).to_be_visible()
    assert overflowing(page) <= 0
    page.get_by_role("link", name="Clear filters").click()
    screenshot(page, "audit")
    page.set_viewport_size({"width": 390, "height": 844})
    assert overflowing(page) <= 0
