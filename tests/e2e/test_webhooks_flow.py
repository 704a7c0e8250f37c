"""Webhooks in a real browser, with a real Celery worker and a real receiver on 127.0.0.1: a developer
adds an endpoint → copies its secret (shown once) → sends a test event and watches the delivery
succeed without reloading → opens the delivery; the receiver checked the signature with the copied
secret. Then the receiver fails one (one attempt allowed): the log shows it failed, and its Retry
sends it again, followed live to success."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from apps.accounts.models import User
from apps.accounts.services import email_verified_ensure
from apps.rbac.services import membership_create
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.e2e.conftest import DESKTOP, PHONE, LiveServer, overflowing, screenshot, unlabeled_fields
from tests.factories import TEST_ACTOR, organization_make
from tests.support.worker import celery_worker
from tests.webhooks.receiver import http_receiver

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"e2e-hooks-{RUN}"
OWNER = f"owner-{RUN}@e2e-hooks.example"
DEVELOPER = f"dev-{RUN}@e2e-hooks.example"
PASSWORD = "a-long-enough-passphrase-42"


@pytest.fixture
def team(live_db: LiveDb) -> Any:
    organization = organization_make(slug=SLUG, name="Hooks End to End", plan_code="pro", owner_email=OWNER)
    live_db.track(organization)
    tenant_connection().set_schema_to_public()
    user, _ = User.objects.get_or_create(email=DEVELOPER)
    user.set_password(PASSWORD)
    user.save()
    email_verified_ensure(user=user)
    membership_create(user=user, organization=organization, role="developer", actor=TEST_ACTOR)
    tenant_connection().set_schema_to_public()
    yield organization
    tenant_connection().set_schema_to_public()
    User.objects.filter(email__in=[OWNER, DEVELOPER]).delete()


def _fits_a_phone(page: Any) -> None:
    assert unlabeled_fields(page) == []
    page.set_viewport_size(PHONE)
    try:
        assert overflowing(page) == 0
        assert unlabeled_fields(page) == []
    finally:
        page.set_viewport_size(DESKTOP)


def test_add_an_endpoint_send_a_test_event_and_watch_it_delivered(
    page: Any, portal_server: LiveServer, team: Organization
) -> None:
    from playwright.sync_api import expect

    origin = portal_server.organization_url(SLUG)
    # One attempt per delivery: a receiver's failure is final at once (no backoff to wait for).
    with http_receiver() as receiver, celery_worker(concurrency=2, env={"WEBHOOK_MAX_ATTEMPTS": "1"}):
        page.goto(f"{origin}/accounts/login/")
        page.get_by_label("Email").fill(DEVELOPER)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign In", exact=True).click()
        page.wait_for_url(f"{origin}/")
        page.get_by_role("navigation", name="Portal").get_by_role("link", name="Webhooks").click()
        expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()
        expect(page.get_by_text("No endpoints yet.")).to_be_visible()
        _fits_a_phone(page)
        screenshot(page, "webhooks-empty")

        # A refused URL is said at the field, and the form keeps what was typed.
        page.get_by_label("Endpoint URL").fill("ftp://example.com/hook")
        page.get_by_label(re.compile(r"^job\.succeeded")).check()
        page.get_by_role("button", name="Add endpoint").click()
        expect(page.locator("#id_url_error")).to_contain_text("must start with https://")

        page.get_by_label("Endpoint URL").fill(receiver.url)
        page.get_by_label("Description").fill("local receiver")
        expect(page.get_by_label(re.compile(r"^job\.succeeded"))).to_be_checked()
        page.get_by_role("button", name="Add endpoint").click()
        expect(page.get_by_role("heading", name="Endpoint added", level=1)).to_be_visible()
        secret = page.get_by_label("Signing secret", exact=True).input_value()
        assert secret.startswith("whsec_")
        page.get_by_role("button", name="Copy secret").click()
        expect(page.locator("#webhook-secret-copied")).not_to_be_empty()
        receiver.secret = secret  # the receiver checks each signature with the copied secret
        screenshot(page, "webhook-secret")

        page.get_by_role("link", name="Continue to the endpoint").click()
        expect(page.get_by_role("heading", name="Webhook endpoint", level=1)).to_be_visible()
        assert secret not in page.content()  # shown once
        expect(page.get_by_text("No deliveries yet.")).to_be_visible()
        page.get_by_role("button", name="Send test event").click()
        result = page.locator("#test-result")
        expect(result).to_contain_text("Test event sent")
        # Followed live: the summary asks again while pending and settles on the outcome.
        expect(result.get_by_text("Succeeded", exact=True)).to_be_visible(timeout=45_000)
        expect(result).not_to_contain_text("updating live")
        [request] = receiver.wait_for(1)
        assert request.signature_ok is True and request.headers["CognitionOS-Event"] == "webhook.test"

        page.get_by_role("link", name="Open the test delivery").click()
        expect(page.get_by_role("heading", name="Webhook delivery", level=1)).to_be_visible()
        expect(page.get_by_text("A test event from CognitionOS.")).to_be_visible()
        expect(page.get_by_text("Succeeded", exact=True)).to_be_visible()
        _fits_a_phone(page)
        screenshot(page, "webhook-delivery")

        page.get_by_role("link", name="← The endpoint's deliveries").click()
        rows = page.locator("tbody tr", has_text="webhook.test")
        expect(rows).to_have_count(1)
        expect(rows.get_by_text("Succeeded", exact=True)).to_be_visible()

        # A failure: the outcome says why, and the log offers Retry on the failed row.
        receiver.statuses = [500]
        page.get_by_role("button", name="Send test event").click()
        expect(result.get_by_text("Failed", exact=True)).to_be_visible(timeout=45_000)
        expect(result).to_contain_text("HTTP 500")
        page.reload()
        expect(rows).to_have_count(2)
        failed = page.locator("tbody tr", has_text="HTTP 500")
        expect(failed.get_by_text("Failed", exact=True)).to_be_visible()
        _fits_a_phone(page)
        screenshot(page, "webhook-endpoint")

        receiver.statuses = [200]
        failed.get_by_role("button", name=re.compile(r"^Retry the webhook\.test delivery")).click()
        expect(page.get_by_role("heading", name="Webhook delivery", level=1)).to_be_visible()
        expect(page.get_by_text("Sent again, as a new delivery of the same event")).to_be_visible()
        expect(page.get_by_text("Succeeded", exact=True)).to_be_visible(timeout=45_000)
        expect(page.get_by_role("link", name="an earlier delivery")).to_be_visible()
        assert [r.signature_ok for r in receiver.wait_for(3)] == [True, True, True]
        page.get_by_role("link", name="← The endpoint's deliveries").click()
        expect(rows).to_have_count(3)

        page.get_by_role("link", name="← Webhooks").click()
        expect(page.locator("tbody tr", has_text="local receiver")).to_have_count(1)
        assert secret not in page.content()
        _fits_a_phone(page)
        screenshot(page, "webhooks")
