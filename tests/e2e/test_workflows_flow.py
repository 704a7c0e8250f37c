"""The workflows pages in a real browser, with a real Celery worker and the fake provider: create the
two-step workflow of docs/workflows.md, see a misspelled step reference reported at its step, fix
it, see the cost preview, start a run and watch its steps finish on the page without reloading it.
Screenshots at desktop and phone widths."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from allauth.account.models import EmailAddress

from apps.accounts.models import User
from apps.ops.management.commands.up import web_hosts
from apps.portal.workflows_pages import EXAMPLE_YAML
from apps.rbac.models import Membership, Role
from apps.tenants.connection import tenant_connection
from tests.conftest import LiveDb
from tests.e2e.conftest import PHONE, LiveServer, overflowing, screenshot, unlabeled_fields
from tests.support.fake_provider import FakeProvider
from tests.support.processes import free_port, web_serving
from tests.support.worker import celery_worker

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"e2e-flows-{RUN}"
EMAIL = f"builder-{RUN}@flows.example"
PASSWORD = "a-long-enough-passphrase-42"
MISSPELLED = EXAMPLE_YAML.replace("{{ steps.summary.output }}", "{{ steps.sumary.output }}")


def _provider_env(provider: FakeProvider) -> dict[str, str]:
    return {"OPENAI_API_KEY": "sk-test-platform", "OPENAI_BASE_URL": provider.openai_base_url}


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    # Each call takes a second: the steps are seen running, then done, one after the other.
    with FakeProvider(latency_s=1.0) as fake:
        yield fake


@pytest.fixture
def server(live_db: LiveDb, provider: FakeProvider) -> Iterator[LiveServer]:
    port = free_port()
    env = {"WEB_PROCESSES": "1", "WEB_THREADS": "4", **_provider_env(provider)}
    with web_serving(port=port, env=env, hosts=web_hosts("127.0.0.1")):
        yield LiveServer(port, mailbox=None)  # type: ignore[arg-type]


@pytest.fixture
def builder(live_db: LiveDb) -> Iterator[User]:
    organization = live_db.organization(slug=SLUG, name="Flows Co")
    user = User.objects.create_user(email=EMAIL, password=PASSWORD)
    EmailAddress.objects.create(user=user, email=EMAIL, verified=True, primary=True)
    Membership.objects.create(organization=organization, user=user, role=Role.DEVELOPER)
    tenant_connection().set_schema_to_public()
    yield user
    tenant_connection().set_schema_to_public()
    User.objects.filter(email=EMAIL).delete()


def phone_checks(page: Any) -> None:
    """At phone width: every field named, nothing wider than the window."""
    page.set_viewport_size(PHONE)
    assert unlabeled_fields(page) == []
    assert overflowing(page) == 0
    page.set_viewport_size({"width": 1280, "height": 800})


def test_build_preview_and_run_the_docs_workflow(
    page: Any, server: LiveServer, builder: User, provider: FakeProvider
) -> None:
    from playwright.sync_api import expect

    base = server.organization_url(SLUG)
    page.goto(base + "/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(base + "/")

    # The list is empty and says what to do first.
    page.get_by_role("navigation", name="Portal").get_by_role("link", name="Workflows").click()
    expect(page.get_by_role("heading", name="Workflows", level=1)).to_be_visible()
    expect(page.get_by_text("No workflows yet.")).to_be_visible()
    page.get_by_role("link", name="Create a workflow from the example").click()

    # The editor starts with the docs' example, drawn as two stages.
    expect(page.get_by_role("heading", name="New workflow")).to_be_visible()
    editor = page.get_by_label("Definition")
    assert "Summarize: {{ input.text }}" in editor.input_value()
    expect(page.locator("#step-1")).to_contain_text("After summary")
    assert unlabeled_fields(page) == []
    # Before anything is typed, the format switch shows the same definition in JSON, and back.
    page.get_by_label("JSON").check()
    expect(page.get_by_label("Definition")).to_have_value(re.compile(r'"name": "summary"'))
    page.get_by_label("YAML").check()
    expect(page.get_by_label("Definition")).to_have_value(re.compile(r"inputs: \[text\]"))
    screenshot(page, "workflow-editor")
    phone_checks(page)

    # A misspelled reference: refused, and said at the second step (and at the top).
    page.get_by_label("Name").fill("translate")
    editor.fill(MISSPELLED)
    page.get_by_role("button", name="Create workflow").click()
    expect(page.get_by_role("alert")).to_contain_text("Not saved: 1 problem")
    second = page.locator("#step-1")
    expect(second).to_contain_text("unknown step 'sumary'")
    expect(second).to_contain_text("sumary (no such step)")
    expect(page.locator("#step-0")).not_to_contain_text("unknown step")
    screenshot(page, "workflow-errors")
    phone_checks(page)

    # Fixed: saved, and the workflow's page draws it.
    page.get_by_label("Definition").fill(EXAMPLE_YAML)
    page.get_by_role("button", name="Create workflow").click()
    expect(page.get_by_role("heading", name="translate", level=1)).to_be_visible()
    expect(page.get_by_text("Created translate (version 1).")).to_be_visible()

    # The cost preview is on the page before the run starts.
    page.get_by_role("link", name="Start a run").click()
    expect(page.get_by_role("heading", name="Cost preview")).to_be_visible()
    expected = page.locator("#preview-expected").inner_text()
    worst = page.locator("#preview-worst").inner_text()
    assert expected.startswith("$") and worst.startswith("$") and float(worst[1:]) > float(expected[1:]) > 0
    page.get_by_label("text", exact=True).fill("The cat sat on the mat. It was a sunny day and the cat was happy.")
    page.get_by_role("button", name="Update the cost preview").click()
    expect(page.locator("#preview-expected")).not_to_have_text(expected)
    assert unlabeled_fields(page) == []
    screenshot(page, "workflow-preview")
    phone_checks(page)

    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    with celery_worker(env=_provider_env(provider)):
        page.get_by_role("button", name="Start run").click()
        expect(page.get_by_role("heading", name="Run of translate")).to_be_visible()
        # From here the page is never reloaded: the steps change under a marker left in the window.
        page.evaluate("() => { window.stillTheSamePage = true; }")
        summary = page.locator('li[data-step="summary"]')
        french = page.locator('li[data-step="french"]')
        expect(summary).to_have_attribute("data-status", "succeeded", timeout=60_000)
        seen_french = french.get_attribute("data-status")
        expect(french).to_have_attribute("data-status", "succeeded", timeout=60_000)
        expect(page.locator("#run-status")).to_contain_text("succeeded")
    assert page.evaluate("() => window.stillTheSamePage === true")
    # Followed by the run's events stream (the polled fragment is only its fallback).
    assert any(url.endswith("/events/") for url in requested), requested
    assert seen_french in ("pending", "running", "succeeded")
    expect(summary.locator(".wf-output")).to_contain_text("The cat sat on the mat.")
    expect(page.get_by_role("heading", name="Output")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    screenshot(page, "workflow-run")
    phone_checks(page)

    page.get_by_role("navigation", name="Portal").get_by_role("link", name="Workflows").click()
    row = page.locator("tbody tr", has_text="translate")
    expect(row).to_contain_text("v1")
    expect(row).to_contain_text("succeeded")
    screenshot(page, "workflows")
    phone_checks(page)

    # The workflow's page: its steps, its versions and its runs.
    row.get_by_role("link", name="translate").click()
    expect(page.get_by_role("heading", name="Versions")).to_be_visible()
    expect(page.locator("#runs-heading ~ .table-wrap tbody tr")).to_have_count(1)
    screenshot(page, "workflow-detail")
    phone_checks(page)


def test_a_failed_run_is_rerun_from_its_failed_step(
    page: Any, server: LiveServer, builder: User, provider: FakeProvider, live_db: LiveDb
) -> None:
    """The provider refuses the second step's model: the run fails at that step; re-run once the
    provider is back, the first step's output is kept and only the second runs again."""
    from playwright.sync_api import expect

    base = server.organization_url(SLUG)
    page.goto(base + "/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(base + "/")
    page.goto(base + "/workflows/new/")
    page.get_by_label("Name").fill("flaky")
    # The second step on one model (a policy would route around the failing one).
    page.get_by_label("Definition").fill(EXAMPLE_YAML.replace("policy: cheapest", "model: gpt-5-nano"))
    page.get_by_role("button", name="Create workflow").click()
    page.get_by_role("link", name="Start a run").click()
    page.get_by_label("text", exact=True).fill("A short text.")
    # The model and its fallback (the catalog's) both refused: the step fails.
    provider.fail_models({"gpt-5-nano", "gpt-4.1-nano"}, status=400)
    with celery_worker(env=_provider_env(provider)):
        page.get_by_role("button", name="Start run").click()
        expect(page.locator("#run-status")).to_contain_text("failed", timeout=60_000)
        expect(page.locator('li[data-step="summary"]')).to_have_attribute("data-status", "succeeded")
        expect(page.locator('li[data-step="french"]')).to_have_attribute("data-status", "failed")
        expect(page.get_by_role("button", name="Re-run from the failed step")).to_be_visible()
        screenshot(page, "workflow-run-failed")
        phone_checks(page)
        provider.fail_models(set())
        page.get_by_role("button", name="Re-run from the failed step").click()
        expect(page.get_by_text("Re-running from the failed step")).to_be_visible()
        expect(page.locator("#run-status")).to_contain_text("succeeded", timeout=60_000)
    summary = page.locator('li[data-step="summary"]')
    expect(summary).to_contain_text("kept from the earlier run")
    expect(page.locator('li[data-step="french"]')).to_have_attribute("data-status", "succeeded")
    expect(page.get_by_role("link", name="an earlier run")).to_be_visible()
