"""Issue 12's end-to-end journey, in one headless Chromium session against the web server, a real Celery
worker and the fake provider over HTTP: a new organization's owner signs in → creates an API key
(its secret shown once) → runs a prompt in the playground and watches the answer stream in, then
reads its model, tokens, cost, cache layer and latency → finds the call in the request log and
opens its detail → calls /v1 with the new key through the openai SDK and finds that call too, under
the key's name → sees both on the dashboard → builds the two-step workflow of docs/workflows.md,
sees a misspelled reference reported at its step, fixes it, previews its cost and watches a run's
steps finish live → sets a hard budget below one call's reservation and sees the playground refuse
with the budget's message. Screenshots `journey-<step>` at desktop and phone widths; at phone width
every page has every field labelled and nothing wider than the window."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from allauth.account.models import EmailAddress
from openai import OpenAI

from apps.accounts.models import User
from apps.llm.budgets import usage_fold
from apps.rbac.models import Membership, Role
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.e2e.conftest import DESKTOP, PHONE, LiveServer, overflowing, provider_env, screenshot, unlabeled_fields
from tests.support.fake_provider import ANSWER_PREFIX, FakeProvider
from tests.support.processes import ROOT
from tests.support.worker import celery_worker

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"e2e-journey-{RUN}"
EMAIL = f"owner-{RUN}@journey.example"
PASSWORD = "a-long-enough-passphrase-42"
KEY_NAME = "journey script"
QUESTION = "Name three <b>bold</b> colours"
# Every wait on the worker or the stream is bounded: generous for a loaded machine, never forever.
LIVE_TIMEOUT_MS = 60_000


def docs_workflow_yaml() -> str:
    """The two-step example as docs/workflows.md writes it (its first YAML block), typed as is."""
    docs = (ROOT / "docs" / "workflows.md").read_text(encoding="utf-8")
    found = re.search(r"```yaml\n(.*?)```", docs, re.DOTALL)
    assert found, "docs/workflows.md has no YAML example"
    return found.group(1)


@pytest.fixture
def organization(live_db: LiveDb) -> Iterator[Organization]:
    """A new organization with its owner (a verified email and a password to sign in with)."""
    organization = live_db.organization(slug=SLUG, name="Journey Co")
    user = User.objects.create_user(email=EMAIL, password=PASSWORD)
    EmailAddress.objects.create(user=user, email=EMAIL, verified=True, primary=True)
    Membership.objects.create(organization=organization, user=user, role=Role.OWNER)
    tenant_connection().set_schema_to_public()
    yield organization
    tenant_connection().set_schema_to_public()
    User.objects.filter(email=EMAIL).delete()


# Records the answer's text each time it changes, and whether the end's figures were shown yet.
WATCH_ANSWER = """() => {
  const answer = document.getElementById("answer");
  const meta = document.getElementById("answer-meta");
  window.seen = [];
  new MutationObserver(() => window.seen.push({text: answer.textContent, ended: !meta.hidden}))
    .observe(answer, {childList: true, subtree: true, characterData: true});
}"""

# Records each distinct state of the run's steps ("summary=running french=pending") as the page
# swaps its live part, so that the test sees the steps finish one after the other.
WATCH_STEPS = """() => {
  const state = () => [...document.querySelectorAll("li[data-step]")]
    .map(step => `${step.dataset.step}=${step.dataset.status}`).join(" ");
  window.stepStates = [state()];
  new MutationObserver(() => {
    const now = state();
    if (now !== window.stepStates[window.stepStates.length - 1]) window.stepStates.push(now);
  }).observe(document.body, {childList: true, subtree: true, attributes: true, attributeFilter: ["data-status"]});
}"""


def shot(page: Any, name: str) -> None:
    """Screenshots `journey-<name>` at desktop and phone; at phone width every field is named and
    nothing is wider than the window."""
    screenshot(page, f"journey-{name}")
    page.set_viewport_size(PHONE)
    try:
        assert unlabeled_fields(page) == [], name
        assert overflowing(page) == 0, name
    finally:
        page.set_viewport_size(DESKTOP)


def open_page(page: Any, link: str, heading: str | None = None) -> None:
    from playwright.sync_api import expect

    page.get_by_role("navigation", name="Portal").get_by_role("link", name=link, exact=True).click()
    expect(page.get_by_role("heading", name=heading or link, level=1)).to_be_visible()


def test_the_customer_portal_journey(
    page: Any, provider_server: LiveServer, fake_provider: FakeProvider, organization: Organization
) -> None:
    from playwright.sync_api import expect

    base = provider_server.organization_url(SLUG)

    # -- 1. Sign in through the real form; create an API key (its secret shown once). -------------
    page.goto(f"{provider_server.url}/accounts/login/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In", exact=True).click()
    page.wait_for_url(base + "/")

    open_page(page, "API keys")
    expect(page.get_by_text("No keys yet.")).to_be_visible()
    page.get_by_label("Name").fill(KEY_NAME)
    page.get_by_label("llm:invoke").check()
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("heading", name=f"Your new key “{KEY_NAME}”")).to_be_visible()
    key = page.get_by_label("New API key").input_value()
    api_base_url = page.locator("#api-base-url").inner_text()
    assert key.startswith("cos_")
    assert api_base_url == f"http://localhost:{provider_server.port}/v1"
    shot(page, "1-key-created")
    page.reload()  # shown once: the page lists the key by its prefix from now on
    expect(page.locator("tbody tr", has_text=KEY_NAME)).to_have_count(1)
    assert key not in page.content()

    # -- 2. The playground: the answer streams in, then its figures. -------------------------------
    fake_provider.slow_stream(chunk_delay_s=0.3)  # the answer visibly arrives in pieces
    open_page(page, "Playground")
    page.get_by_label("Model or policy").select_option("gpt-4o-mini")
    page.get_by_label("Message 1", exact=True).fill(QUESTION)
    page.evaluate(WATCH_ANSWER)
    page.get_by_role("button", name="Run").click()
    answer = ANSWER_PREFIX + QUESTION
    expect(page.locator("#answer-meta")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#answer")).to_have_text(answer)
    seen = page.evaluate("() => window.seen")
    # Text arrived in more than one piece, all before the end's figures were shown.
    before_end = [s["text"] for s in seen if not s["ended"]]
    assert len(before_end) >= 2 and before_end[0] != answer and answer.startswith(before_end[0]), seen
    expect(page.locator("#meta-model")).to_have_text("gpt-4o-mini")
    expect(page.locator("#meta-tokens")).to_have_text(re.compile(r"\d+ in · \d+ out"))
    expect(page.locator("#meta-cost")).to_contain_text("$0.")
    expect(page.locator("#meta-cache")).to_have_text("Miss: the provider answered")
    expect(page.locator("#meta-latency")).to_contain_text(re.compile(r"\d+ ms"))
    expect(page.locator("#answer-status")).to_have_text("Done.")
    playground_call = page.locator("#meta-request").inner_text()
    fake_provider.slow_stream(chunk_delay_s=0)
    shot(page, "2-playground")

    # -- 3. The request log: the playground's call, its detail; then /v1 with the new key. --------
    open_page(page, "Request log")
    rows = page.locator("table.request-log tbody tr")
    row = rows.filter(has=page.get_by_role("link", name=f"Call {playground_call}"))
    expect(row).to_contain_text("Playground")
    expect(row).to_contain_text("gpt-4o-mini")
    expect(row).to_contain_text(EMAIL)
    row.get_by_role("link", name=f"Call {playground_call}").click()
    expect(page.get_by_role("heading", name=f"Call {playground_call}")).to_be_visible()
    expect(page.locator(".page-head")).to_contain_text("Playground")
    expect(page.locator("pre.call-content").first).to_contain_text(QUESTION)  # escaped, not bold
    shot(page, "3-request-detail")

    # The same gateway a program calls: the openai SDK at the platform's /v1, with the new key.
    client = OpenAI(base_url=api_base_url, api_key=key, max_retries=0, timeout=60)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello from a script"}]
    )
    assert raw.parse().choices[0].message.content == ANSWER_PREFIX + "Hello from a script"
    gateway_call = raw.headers["x-cognitionos-request-id"]
    open_page(page, "Request log")
    expect(rows).to_have_count(2)
    row = rows.filter(has=page.get_by_role("link", name=f"Call {gateway_call}"))
    expect(row).to_contain_text("Gateway /v1/chat/completions")
    expect(row).to_contain_text(KEY_NAME)
    expect(row).to_contain_text("gpt-4o-mini")
    shot(page, "3-request-log")

    # The dashboard reads rollups that the beat's llm_usage_fold_all → llm_usage_fold fills every
    # minute and the page offers no refresh: run the same fold here, in the test process, against
    # the same database (what the beat's task would do for this organization).
    usage_fold(organization=organization)
    tenant_connection().set_schema_to_public()
    open_page(page, "Dashboard")
    expect(page.locator(".usage-stat", has_text="Requests").locator("dd")).to_have_text("2")
    expect(page.locator("[data-chart] canvas")).to_have_count(4)
    by_model = page.locator("section", has=page.get_by_role("heading", name="By model"))
    expect(by_model.get_by_role("rowheader", name="gpt-4o-mini")).to_be_visible()
    by_key = page.locator("section", has=page.get_by_role("heading", name="By API key"))
    expect(by_key.get_by_role("rowheader", name=re.compile(KEY_NAME))).to_be_visible()
    by_person = page.locator("section", has=page.get_by_role("heading", name="By person"))
    expect(by_person.get_by_role("rowheader", name=re.compile(re.escape(EMAIL)))).to_be_visible()
    page.wait_for_timeout(300)  # the charts follow their containers' width
    shot(page, "3-dashboard")

    # -- 4. The docs' two-step workflow: a misspelled reference at its step, fixed, its cost
    #       previewed, run on the worker and followed live. -----------------------------------------
    example = docs_workflow_yaml()
    misspelled = example.replace("{{ steps.summary.output }}", "{{ steps.sumary.output }}")
    assert misspelled != example
    open_page(page, "Workflows")
    expect(page.get_by_text("No workflows yet.")).to_be_visible()
    shot(page, "4-workflows-empty")
    page.get_by_role("link", name="Create a workflow from the example").click()
    expect(page.get_by_role("heading", name="New workflow")).to_be_visible()
    page.get_by_label("Name").fill("translate")
    page.get_by_label("Definition").fill(misspelled)
    page.get_by_role("button", name="Create workflow").click()
    expect(page.get_by_role("alert")).to_contain_text("Not saved: 1 problem")
    expect(page.locator("#step-1")).to_contain_text("unknown step 'sumary'")
    expect(page.locator("#step-0")).not_to_contain_text("unknown step")
    shot(page, "4-workflow-error")

    page.get_by_label("Definition").fill(example)
    page.get_by_role("button", name="Create workflow").click()
    expect(page.get_by_role("heading", name="translate", level=1)).to_be_visible()
    expect(page.get_by_text("Created translate (version 1).")).to_be_visible()
    shot(page, "4-workflow")
    page.get_by_role("link", name="Start a run").click()
    page.get_by_label("text", exact=True).fill("The cat sat on the mat. It was a sunny day and the cat was happy.")
    page.get_by_role("button", name="Update the cost preview").click()
    # Expected and worst case, on the page before anything starts.
    expect(page.get_by_role("heading", name="Cost preview")).to_be_visible()
    expected = page.locator("#preview-expected").inner_text()
    worst = page.locator("#preview-worst").inner_text()
    assert expected.startswith("$") and worst.startswith("$") and float(worst[1:]) >= float(expected[1:]) > 0
    shot(page, "4-workflow-preview")

    fake_provider.latency_s = 1.0  # each step's call takes a second: the page is seen changing under us
    with celery_worker(concurrency=2, env=provider_env(fake_provider), name="journey"):
        page.get_by_role("button", name="Start run").click()
        expect(page.get_by_role("heading", name="Run of translate")).to_be_visible()
        page.evaluate(WATCH_STEPS)
        summary = page.locator('li[data-step="summary"]')
        french = page.locator('li[data-step="french"]')
        expect(summary).to_have_attribute("data-status", "succeeded", timeout=LIVE_TIMEOUT_MS)
        expect(french).to_have_attribute("data-status", "succeeded", timeout=LIVE_TIMEOUT_MS)
        expect(page.locator("#run-status")).to_contain_text("succeeded")
    fake_provider.latency_s = 0.0
    # Followed live (the watcher set on the page is still there: never reloaded), and seen between
    # the steps: the summary done while the translation was not yet.
    states = page.evaluate("() => window.stepStates")
    assert states and "summary=succeeded french=succeeded" in states[-1], states
    assert any("summary=succeeded" in state and "french=succeeded" not in state for state in states), states
    expect(summary.locator(".wf-output")).to_contain_text("The cat sat on the mat.")
    shot(page, "4-workflow-run")

    # -- 5. A hard budget below one call's reservation: the playground refuses with its message. ---
    open_page(page, "Budgets")
    page.get_by_label("Applies to").select_option(label="The whole organization")
    page.get_by_label("Period").select_option("day")
    page.get_by_label("Limit (USD)").fill("0.000001")
    expect(page.get_by_label("Hard limit: refuse calls that would go past it")).to_be_checked()
    page.get_by_role("button", name="Save budget").click()
    expect(page.get_by_text("Budget saved")).to_be_visible()
    budget_row = page.locator("tbody tr", has_text="Organization")
    expect(budget_row).to_contain_text("$0.000001")  # as set, not rounded to $0.00
    expect(budget_row).to_contain_text("hard")
    shot(page, "5-budget")

    calls_before = len(fake_provider.calls)
    open_page(page, "Playground")
    page.get_by_label("Model or policy").select_option("gpt-4o-mini")
    page.get_by_label("Message 1", exact=True).fill("A question nobody asked before")
    # Before the run, the preview gives the worst case and says the budget has less left than that.
    preview = page.locator("#cost-preview")
    expect(preview).to_contain_text("at most $")
    expect(preview).to_contain_text("has $0.000001 left: less than the worst case, so the call may be refused")
    page.get_by_role("button", name="Run").click()
    refusal = page.get_by_role("alert").filter(has_text="Budget exceeded")
    expect(refusal).to_contain_text("the organization budget (day, $0.000001")
    expect(page.locator("#answer-status")).to_have_text("Nothing was run.")
    expect(page.locator("#answer-meta")).to_be_hidden()
    assert len(fake_provider.calls) == calls_before  # refused before any provider was asked
    shot(page, "5-playground-refused")
