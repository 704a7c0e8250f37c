"""Knowledge bases in a real browser, with a real Celery worker and the fake provider over HTTP as
the platform's OpenAI: create a knowledge base (text-embedding-3-small reduced to 512 dimensions)
→ upload a Markdown file → its row goes from queued to indexed without a reload (HTMX polling)
→ a broken upload is refused with its reason at the field → search, and the matched words are
highlighted. Screenshots at desktop and phone widths; every field labelled, nothing wider than a
phone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from allauth.account.models import EmailAddress

from apps.accounts.models import User
from apps.rbac.models import Membership, Role
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.e2e.conftest import DESKTOP, PHONE, LiveServer, overflowing, provider_env, screenshot, unlabeled_fields
from tests.support.fake_provider import FakeProvider
from tests.support.worker import celery_worker

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"e2e-knowledge-{RUN}"
EMAIL = f"owner-{RUN}@knowledge.example"
PASSWORD = "a-long-enough-passphrase-42"
LIVE_TIMEOUT_MS = 60_000
GUIDE = """# Support guide

How the support team answers customers.

## Refunds

A customer may ask for a refund within 30 days of the purchase. Refunds are paid to the card
used; after 30 days we offer store credit instead.

## Shipping <b>times</b>

Orders leave the warehouse within two working days.
"""


@pytest.fixture
def organization(live_db: LiveDb) -> Iterator[Organization]:
    organization = live_db.organization(slug=SLUG, name="Knowledge Co")
    user = User.objects.create_user(email=EMAIL, password=PASSWORD)
    EmailAddress.objects.create(user=user, email=EMAIL, verified=True, primary=True)
    Membership.objects.create(organization=organization, user=user, role=Role.OWNER)
    tenant_connection().set_schema_to_public()
    yield organization
    tenant_connection().set_schema_to_public()
    User.objects.filter(email=EMAIL).delete()


def shot(page: Any, name: str) -> None:
    """Screenshots `knowledge-<name>` at desktop and phone; at phone width every field is named and
    nothing is wider than the window."""
    screenshot(page, f"knowledge-{name}")
    page.set_viewport_size(PHONE)
    try:
        assert unlabeled_fields(page) == [], name
        assert overflowing(page) <= 0, name
    finally:
        page.set_viewport_size(DESKTOP)


def test_create_a_knowledge_base_upload_a_document_watch_it_get_indexed_and_search_it(
    page: Any,
    provider_server: LiveServer,
    fake_provider: FakeProvider,
    organization: Organization,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    base = provider_server.organization_url(SLUG)
    page.goto(f"{provider_server.url}/accounts/login/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In", exact=True).click()
    page.wait_for_url(base + "/")

    # Build → Knowledge: the empty state says what to do first.
    page.get_by_role("navigation", name="Portal").get_by_role("link", name="Knowledge", exact=True).click()
    expect(page.get_by_role("heading", name="Knowledge bases", level=1)).to_be_visible()
    expect(page.get_by_text("Create your first knowledge base")).to_be_visible()
    page.get_by_role("link", name="Create a knowledge base").first.click()
    expect(page.get_by_role("heading", name="Create a knowledge base", level=1)).to_be_visible()

    # A refusal is said at its field.
    page.get_by_label("Chunk size (tokens)").fill("10")
    page.get_by_role("button", name="Create knowledge base").click()
    expect(page.locator("#id_name_error, .field--invalid .field__error").first).to_be_visible()
    expect(page.get_by_text("From 64 to 2,000 tokens.")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("Support guide")
    page.get_by_label("Description (optional)").fill("How we answer customers")
    page.get_by_label("Embedding model").select_option("text-embedding-3-small")
    page.get_by_label("Dimensions").select_option("512")
    page.get_by_label("Chunk size (tokens)").fill("64")
    page.get_by_label("Chunk overlap (tokens)").fill("8")
    shot(page, "create")
    page.get_by_role("button", name="Create knowledge base").click()
    expect(page.get_by_text("Knowledge base “Support guide” created")).to_be_visible()
    expect(page.get_by_role("heading", name="Support guide", level=1)).to_be_visible()
    expect(page.get_by_text("No documents yet")).to_be_visible()
    shot(page, "empty")

    # Upload: a broken file is refused with its reason at the field; nothing is queued for it.
    empty = tmp_path / "empty.md"
    empty.write_bytes(b"")
    page.get_by_label("Upload documents").set_input_files(str(empty))
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator(".kb-upload .field__error")).to_contain_text("empty.md:")
    expect(page.get_by_label("Upload documents")).to_have_attribute("aria-invalid", "true")
    shot(page, "upload-refused")

    # A Markdown file: queued, then followed live to indexed, without a reload.
    guide = tmp_path / "support-guide.md"
    guide.write_text(GUIDE, encoding="utf-8")
    page.get_by_label("Upload documents").set_input_files(str(guide))
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.get_by_text("1 document queued (“support-guide.md”)")).to_be_visible()
    row = page.locator('tr[id^="document-"]')
    expect(row).to_have_count(1)
    expect(row.locator(".badge")).to_have_text("Queued")
    page.evaluate("window.__notReloaded = true")
    with celery_worker(concurrency=2, env=provider_env(fake_provider), name="portal-knowledge"):
        expect(row.locator(".badge")).to_have_text("Indexed", timeout=LIVE_TIMEOUT_MS)
    assert page.evaluate("window.__notReloaded === true"), "the page reloaded instead of updating the row"
    expect(row.get_by_text("embedded")).to_contain_text(" / ")
    embedded, total = (int(n) for n in row.locator(".kb-count").inner_text().split(" embedded")[0].split(" / "))
    assert embedded == total >= 2, (embedded, total)  # 64-token chunks: the guide is cut in several
    # The base's figures follow too.
    expect(page.locator("#kb-stats .usage-stat").nth(1).locator("dd")).to_have_text(str(total))
    # Embedded through the governed path: the platform's OpenAI (the fake) was called for it.
    assert [call.model for call in fake_provider.calls if call.path.endswith("/embeddings")], fake_provider.calls
    shot(page, "indexed")

    # Search: the results show their scores, document, position, heading path and marked words.
    page.get_by_label("Query").fill("refund after 30 days")
    page.get_by_label("Mode").select_option("hybrid")
    page.get_by_label("Results").fill("3")
    page.get_by_role("button", name="Search", exact=True).click()
    hits = page.locator(".kb-hit")
    expect(hits.first).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    assert page.evaluate("window.__notReloaded === true"), "the search reloaded the page instead of swapping"
    first = hits.first
    expect(first).to_contain_text("support-guide")
    expect(first).to_contain_text("score ")
    expect(first.locator(".kb-hit__path")).to_contain_text("Support guide \u203a Refunds")
    marked = first.locator("mark").all_inner_texts()
    assert marked and all(word.lower().startswith(("refund", "30", "day")) for word in marked), marked
    # The HTML in the document is shown as text, never as markup.
    page.get_by_label("Query").fill("shipping times")
    page.get_by_label("Mode").select_option("text")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator(".kb-hit__path").first).to_contain_text("Shipping <b>times</b>")
    expect(page.locator(".kb-hit b")).to_have_count(0)
    page.get_by_label("Query").fill("refund after 30 days")
    page.get_by_label("Mode").select_option("hybrid")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator(".kb-hit mark").first).to_be_visible()
    shot(page, "search")

    # The list shows it with its counts.
    page.get_by_role("navigation", name="Portal").get_by_role("link", name="Knowledge", exact=True).click()
    kb_row = page.locator('tr[id^="kb-"]')
    expect(kb_row).to_have_count(1)
    expect(kb_row.locator('td[data-label="Documents"]')).to_have_text("1")
    expect(kb_row.get_by_text("Ready")).to_be_visible()
    shot(page, "list")

    # Settings: a new dimension count asks first, saying what it costs; keeping the model changes nothing.
    kb_row.get_by_role("link", name="Settings of Support guide").click()
    expect(page.get_by_role("heading", name="Settings", level=1)).to_be_visible()
    page.get_by_label("Dimensions").select_option("256")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("heading", name="Re-embed", level=1)).to_be_visible()
    expect(page.get_by_text(f"Every one of its {total} chunks is embedded again")).to_be_visible()
    expect(page.get_by_role("button", name="Re-embed knowledge base")).to_be_visible()
    shot(page, "reembed-confirm")
    page.get_by_role("link", name="Keep the current model").click()
    expect(page.get_by_label("Dimensions")).to_have_value("512")
    shot(page, "settings")
