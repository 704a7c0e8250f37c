"""Jobs and agents in a real browser, with a real Celery worker and the fake provider over HTTP:
create an agent → submit a job to it → its page shows it queued or running and then succeeded
without a reload (the progress stream) → the jobs list follows a second job live (HTMX polling) →
edit the agent. Screenshots at desktop and phone widths; every field labelled, nothing wider than
a phone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from allauth.account.models import EmailAddress

from apps.accounts.models import User
from apps.rbac.models import Membership, Role
from apps.tenants.connection import tenant_connection
from tests.conftest import LiveDb
from tests.e2e.conftest import PHONE, LiveServer, overflowing, screenshot, unlabeled_fields
from tests.support.fake_provider import FakeProvider
from tests.support.worker import celery_worker

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"e2e-jobs-{RUN}"
EMAIL = f"builder-{RUN}@jobs.example"
PASSWORD = "a-long-enough-passphrase-42"
# Long enough for the browser to see the job before it ends, short enough for a quick test.
PROVIDER_LATENCY_S = 3.0


@pytest.fixture
def owner(live_db: LiveDb) -> Iterator[User]:
    organization = live_db.organization(slug=SLUG, name="Jobs Co")
    user = User.objects.create_user(email=EMAIL, password=PASSWORD)
    EmailAddress.objects.create(user=user, email=EMAIL, verified=True, primary=True)
    Membership.objects.create(organization=organization, user=user, role=Role.OWNER)
    tenant_connection().set_schema_to_public()
    yield user
    User.objects.filter(email=EMAIL).delete()


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with FakeProvider(latency_s=PROVIDER_LATENCY_S) as fake:
        yield fake


@pytest.fixture
def worker(provider: FakeProvider, live_db: LiveDb) -> Iterator[None]:
    env = {"OPENAI_API_KEY": "sk-test-platform", "OPENAI_BASE_URL": provider.openai_base_url}
    with celery_worker(concurrency=4, env=env, name="portal-jobs"):
        yield


def phone_checks(page: Any) -> None:
    assert unlabeled_fields(page) == []
    page.set_viewport_size(PHONE)
    assert overflowing(page) <= 0
    page.set_viewport_size({"width": 1280, "height": 800})


def test_create_an_agent_submit_a_job_to_it_and_watch_it_succeed(
    page: Any, portal_server: LiveServer, owner: User, worker: None, provider: FakeProvider
) -> None:
    from playwright.sync_api import expect

    organization_url = portal_server.organization_url(SLUG)
    page.goto(f"{portal_server.url}/accounts/login/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In", exact=True).click()
    page.wait_for_url(organization_url + "/")

    # Agents: the empty state says what to do first.
    page.get_by_role("navigation", name="Portal").get_by_role("link", name="Agents").click()
    expect(page.get_by_role("heading", name="Agents", level=1)).to_be_visible()
    expect(page.get_by_text("to give jobs and workflow steps a system prompt")).to_be_visible()
    page.get_by_role("link", name="Create an agent").first.click()
    expect(page.get_by_role("heading", name="Create an agent", level=1)).to_be_visible()
    phone_checks(page)
    page.get_by_label("Name").fill("greeter")
    page.get_by_label("System prompt").fill("Answer in one short sentence.")
    page.get_by_label("Model", exact=True).fill("no-such-model")
    page.get_by_role("button", name="Create agent").click()
    # The serializer accepts any model name for an agent; a job naming it is refused at submit.
    expect(page.get_by_text("Agent “greeter” created.")).to_be_visible()
    expect(page.locator('tr[id^="agent-"]')).to_have_count(1)

    # Edit it: the model it will use.
    page.get_by_role("link", name="Edit greeter").click()
    expect(page.get_by_role("heading", name="Edit agent")).to_be_visible()
    page.get_by_label("Model", exact=True).fill("gpt-4o-mini")
    page.get_by_label("Temperature").fill("0.2")
    page.get_by_label("Max tokens").fill("40")
    screenshot(page, "agent-edit")
    phone_checks(page)
    page.get_by_role("button", name="Save agent").click()
    expect(page.get_by_text("Agent “greeter” saved.")).to_be_visible()
    expect(page.get_by_role("cell", name="gpt-4o-mini")).to_be_visible()
    screenshot(page, "agents")
    phone_checks(page)

    # Submit a job to it: its page follows the job to its end, without a reload.
    page.get_by_role("link", name="Submit a job to greeter").click()
    expect(page.get_by_role("heading", name="Submit a job", level=1)).to_be_visible()
    assert page.get_by_label("Agent").locator("option:checked").inner_text() == "greeter"
    screenshot(page, "job-submit")
    phone_checks(page)
    page.get_by_label("Prompt").fill("Say hello to the portal")
    page.get_by_role("button", name="Submit job").click()
    expect(page.get_by_text("Job submitted")).to_be_visible()
    page.evaluate("window.__notReloaded = true")
    live = page.locator("#job-live")
    assert live.locator(".badge").inner_text() in ("Queued", "Running")
    expect(live.locator(".badge")).to_have_text("Succeeded", timeout=30_000)
    assert page.evaluate("window.__notReloaded === true"), "the page reloaded instead of following the job"
    expect(page.locator("#job-answer")).not_to_be_empty()
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    expect(live.get_by_text("gpt-4o-mini")).to_be_visible()
    screenshot(page, "job-detail")
    phone_checks(page)
    assert len(provider.calls) == 1

    # The jobs list follows a running job live (HTMX polling of its row).
    page.goto(organization_url + "/jobs/new/")
    page.get_by_label("Model", exact=True).fill("gpt-4o-mini")
    page.get_by_label("Prompt").fill("A second question for the list")
    page.get_by_role("button", name="Submit job").click()
    expect(page.get_by_text("Job submitted")).to_be_visible()
    page.get_by_role("navigation", name="Portal").get_by_role("link", name="Jobs").click()
    rows = page.locator('tr[id^="job-"]')
    expect(rows).to_have_count(2)
    page.evaluate("window.__notReloaded = true")
    assert rows.first.locator(".badge").inner_text() in ("Queued", "Running")
    expect(rows.first.locator(".badge")).to_have_text("Succeeded", timeout=30_000)
    assert page.evaluate("window.__notReloaded === true"), "the list reloaded instead of updating its row"
    expect(rows.nth(1).get_by_role("link", name="greeter")).to_be_visible()
    screenshot(page, "jobs")
    phone_checks(page)

    # The detail opens from the list.
    rows.nth(1).get_by_role("link", name="Job ").click()
    expect(page.get_by_role("heading", name="Result")).to_be_visible()
    expect(page.locator("#job-answer")).not_to_be_empty()
