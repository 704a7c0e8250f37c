"""The playground in a real browser against the web server and the fake provider: compose a conversation,
run it and watch the answer stream in before its end; the end shows the model, tokens, cost, cache
layer and latency; a repeat is a cache hit; "View as code" shows three snippets, and the openai one,
copied off the page, runs against the same server with a real key; a hard budget below one call's
reservation makes the page show the budget's message. Screenshots at desktop and phone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from allauth.account.models import EmailAddress
from django_tenants.utils import schema_context

from apps.accounts.models import User
from apps.apikeys.services import apikey_create
from apps.llm.models import UsageAttempt
from apps.llm.services import budget_set
from apps.rbac.models import Membership, Role
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.e2e.conftest import PHONE, LiveServer, overflowing, screenshot, unlabeled_fields
from tests.factories import TEST_ACTOR
from tests.support.fake_provider import ANSWER_PREFIX, FakeProvider

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"e2e-playground-{RUN}"
EMAIL = f"dev-{RUN}@playground.example"
PASSWORD = "a-long-enough-passphrase-42"
QUESTION = 'Which "layer" answered?\nSay </script> twice'


@pytest.fixture
def organization(live_db: LiveDb) -> Iterator[Organization]:
    organization = live_db.organization(slug=SLUG, name="Playground Co")
    user = User.objects.create_user(email=EMAIL, password=PASSWORD)
    EmailAddress.objects.create(user=user, email=EMAIL, verified=True, primary=True)
    Membership.objects.create(organization=organization, user=user, role=Role.DEVELOPER)
    tenant_connection().set_schema_to_public()
    yield organization
    tenant_connection().set_schema_to_public()
    User.objects.filter(email=EMAIL).delete()


def _stopped_attempts(organization: Organization) -> list[tuple[str, str]]:
    with schema_context(organization.schema_name):
        return list(UsageAttempt.objects.filter(error_class="client_disconnected").values_list("status", "error_class"))


# Records the answer's text each time it changes, and whether the end's metadata was shown yet.
WATCH = """() => {
  const answer = document.getElementById("answer");
  const meta = document.getElementById("answer-meta");
  window.seen = [];
  new MutationObserver(() => window.seen.push({text: answer.textContent, ended: !meta.hidden}))
    .observe(answer, {childList: true, subtree: true, characterData: true});
}"""


def test_a_prompt_streams_in_shows_its_figures_and_its_code(
    page: Any, provider_server: LiveServer, fake_provider: FakeProvider, organization: Organization
) -> None:
    from playwright.sync_api import expect

    fake_provider.slow_stream(chunk_delay_s=0.3)  # so the answer visibly arrives in pieces
    page.goto(f"{provider_server.url}/accounts/login/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In", exact=True).click()
    page.wait_for_url(provider_server.organization_url(SLUG) + "/")
    page.get_by_role("navigation", name="Portal").get_by_role("link", name="Playground").click()
    expect(page.get_by_role("heading", name="Playground", level=1)).to_be_visible()
    expect(page.get_by_text("Run the prompt to see the answer here.")).to_be_visible()
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()

    page.get_by_label("Model or policy").select_option("gpt-4o-mini")
    page.get_by_label("System message").fill("You answer briefly.")
    page.get_by_label("Message 1", exact=True).fill("Hello there")
    page.get_by_role("button", name="Add message").click()
    expect(page.get_by_label("Role of message 2")).to_have_value("assistant")
    page.get_by_label("Message 2", exact=True).fill("Hello! Ask me anything.")
    page.get_by_role("button", name="Add message").click()
    page.get_by_label("Message 3", exact=True).fill("A throwaway turn")
    page.get_by_role("button", name="Remove message 3").click()
    expect(page.get_by_label("Message 3", exact=True)).to_have_count(0)
    page.get_by_role("button", name="Add message").click()
    expect(page.get_by_label("Role of message 3")).to_have_value("user")
    page.get_by_label("Message 3", exact=True).fill(QUESTION)
    page.get_by_label("Temperature").fill("0.5")
    page.get_by_label("Seed").fill("7")
    assert unlabeled_fields(page) == []
    # What it would cost, before it runs (the model's fallback is dearer: the worst case names it).
    expect(page.locator("#cost-preview")).to_have_text(
        re.compile(
            r"Cost: about \$0\.\d{6} on gpt-4o-mini for a 256-token answer; "
            r"at most \$0\.\d{6} if it falls back to claude-haiku-4-5\."
        )
    )

    page.evaluate(WATCH)
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#answer-meta")).to_be_visible()
    answer = ANSWER_PREFIX + QUESTION
    expect(page.locator("#answer")).to_have_text(answer)
    seen = page.evaluate("() => window.seen")
    before_end = [s["text"] for s in seen if not s["ended"]]
    assert len(before_end) >= 2 and before_end[0] != answer and answer.startswith(before_end[0]), seen
    expect(page.locator("#meta-model")).to_have_text("gpt-4o-mini")
    expect(page.locator("#meta-cache")).to_have_text("Miss: the provider answered")
    expect(page.locator("#meta-tokens")).to_contain_text(" in · ")
    expect(page.locator("#meta-cost")).to_contain_text("$0.0000")
    expect(page.locator("#meta-latency")).to_contain_text("first token")
    expect(page.locator("#meta-budget")).to_contain_text(" reserved, $0.0000")
    request_id = page.locator("#meta-request").inner_text()
    expect(page.get_by_role("link", name=f"Request {request_id} in the request log")).to_have_attribute(
        "href", f"/requests/{request_id}/"
    )
    expect(page.locator("#answer-status")).to_have_text("Done.")
    assert fake_provider.calls[-1].body["seed"] == 7 and fake_provider.calls[-1].body["temperature"] == 0.5
    assert len(fake_provider.calls[-1].body["messages"]) == 4

    page.get_by_role("button", name="View as code").click()
    for title in ("OpenAI Python SDK", "Anthropic Python SDK", "curl"):
        expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible()
    openai_code = page.locator("#snippet-openai").inner_text()
    assert f'base_url="http://localhost:{provider_server.port}/v1"' in openai_code
    assert "Say </script> twice" in page.locator("#snippet-curl").inner_text()
    screenshot(page, "playground")
    page.set_viewport_size(PHONE)
    assert overflowing(page) <= 0
    page.set_viewport_size({"width": 1280, "height": 800})

    # The openai snippet, as copied off the page, runs against this server with a real key.
    tenant_connection().set_schema_to_public()
    key = apikey_create(organization=organization, name="snippet", actor=TEST_ACTOR).key
    ran = subprocess.run(
        [sys.executable, "-c", openai_code],
        env={**os.environ, "COGNITIONOS_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip() == answer

    # The same prompt again, run from the keyboard: the cache answers (the snippet's call filled it too).
    page.get_by_label("Message 3", exact=True).press("Control+Enter")
    expect(page.locator("#meta-cache")).to_have_text("Hit: L1 (this server's memory)")
    expect(page.locator("#meta-cost")).to_contain_text("cached answers cost nothing")
    expect(page.locator("#answer")).to_have_text(answer)

    # Stopped while it streams: the page says so, and the server settles the call from its
    # reservation once it notices the browser left (the next chunk it can't send).
    page.get_by_label("Message 3", exact=True).fill("Stop me halfway")
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#answer")).to_contain_text("Simulated")
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#answer-status")).to_have_text("Stopped. A stopped call is charged what it reserved.")
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    deadline = time.monotonic() + 10
    while (stopped := _stopped_attempts(organization)) == [] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stopped == [("failed", "client_disconnected")]

    # A hard budget below one call's reservation: the page says so, with the budget's own message.
    budget_set(
        organization=organization,
        scope="organization",
        period="day",
        limit_usd=Decimal("0.000001"),
        hard=True,
        actor=TEST_ACTOR,
    )
    tenant_connection().set_schema_to_public()
    page.get_by_label("Message 3", exact=True).fill("A question nobody asked before")
    # The preview (asked again as the prompt changed) says so before anything runs.
    expect(page.locator("#cost-preview")).to_contain_text(
        "The organization's daily budget has $0.000001 left: less than the worst case, so the call may be refused."
    )
    page.get_by_role("button", name="Run").click()
    refusal = page.get_by_role("alert").filter(has_text="Budget exceeded")
    expect(refusal).to_contain_text("the organization budget (day, $0.000001")
    expect(refusal).to_contain_text("worst-case cost")
    expect(page.locator("#answer-status")).to_have_text("Nothing was run.")
    expect(page.locator("#answer-meta")).to_be_hidden()  # the earlier answer's figures are gone
    expect(page.locator("#code")).to_be_hidden()  # and its code, for a prompt since changed
    screenshot(page, "playground-refused")

    # Bad input is shown at its field, and nothing is sent.
    page.get_by_label("Temperature").fill("5")
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#error-temperature")).to_contain_text("from 0 to 2")
    expect(page.get_by_label("Temperature")).to_have_attribute("aria-invalid", "true")
