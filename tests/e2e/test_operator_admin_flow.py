"""The operators' admin in a real browser, against the web server: an operator (staff, with an authenticator
app) opens /admin/, signs in with their password and is asked for a code before anything shows,
finds an organization in the list, opens it, suspends it with a reason (its portal is refused at
once), sees the status and the operator log say so, finds the entry in the operator log, resumes it,
and looks at the deployments page. Screenshots at desktop and phone widths; every field labelled,
every action a named button, nothing wider than a phone."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value
from django_tenants.utils import schema_context

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.ops.models import OperatorAction
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.e2e.conftest import DESKTOP, PHONE, LiveServer, overflowing, screenshot, unlabeled_fields

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"e2e-operated-{RUN}"
OPERATOR = f"operator-{RUN}@cognitionos.example.com"
PASSWORD = "a-long-enough-passphrase-42"
REASON = f"Unpaid invoices, ticket 42 ({RUN})"


def _code(secret: str) -> str:
    """The authenticator's current code; near the end of a 30 s step, the next step's (no tolerance
    is configured: a code computed at 29.9 s would be refused at 30.1 s)."""
    left = 30 - time.time() % 30
    if left < 3:
        time.sleep(left + 0.2)
    return str(format_hotp_value(hotp_value(secret, int(time.time()) // 30)))


@pytest.fixture
def organization(live_db: LiveDb) -> Iterator[Organization]:
    created = live_db.organization(slug=SLUG, name="Operated Co")
    tenant_connection().set_schema_to_public()
    yield created
    tenant_connection().set_schema_to_public()
    OperatorAction.objects.filter(organization_slug=SLUG).delete()
    User.objects.filter(email=f"owner@{SLUG}.example.com").delete()


@pytest.fixture
def operator_secret(live_db: LiveDb) -> Iterator[str]:
    """A staff user with an authenticator app; the test plays the app (it knows the secret)."""
    tenant_connection().set_schema_to_public()
    user = User.objects.create_user(email=OPERATOR, password=PASSWORD, is_staff=True)
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    yield secret
    tenant_connection().set_schema_to_public()
    User.objects.filter(email=OPERATOR).delete()


def _phone_checks(page: Any) -> None:
    assert unlabeled_fields(page) == []
    assert _unnamed_buttons(page) == []
    page.set_viewport_size(PHONE)
    assert overflowing(page) <= 0, "the page scrolls sideways on a phone"
    page.set_viewport_size(DESKTOP)


def _unnamed_buttons(page: Any) -> list[str]:
    """Buttons (and submit inputs) a screen reader could not name."""
    return list(
        page.evaluate(
            """() => [...document.querySelectorAll('button, input[type=submit], input[type=button]')]
                .filter(b => !(b.getAttribute('aria-label') || b.textContent.trim() || b.value || b.title))
                .map(b => b.outerHTML.slice(0, 120))"""
        )
    )


def _status(page: Any) -> Any:
    """The organization page's (read-only) status field."""
    return page.locator(".field-status .readonly")


def test_operator_signs_in_with_a_code_suspends_an_organization_and_sees_it_logged(
    page: Any, portal_server: LiveServer, organization: Organization, operator_secret: str
) -> None:
    from playwright.sync_api import expect

    origin = portal_server.url
    portal = portal_server.organization_url(SLUG)

    # Password first (the admin's own form), then the second factor before any admin page shows.
    page.goto(f"{origin}/admin/")
    page.wait_for_url(re.compile(r"/admin/login/"))
    assert unlabeled_fields(page) == []
    assert _unnamed_buttons(page) == []
    page.get_by_label("Email address").fill(OPERATOR)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/accounts/2fa/reauthenticate/"))
    expect(page.get_by_text("Enter an authenticator code")).to_be_visible()
    assert unlabeled_fields(page) == []
    page.get_by_label("Code").fill(_code(operator_secret))
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url(f"{origin}/admin/")
    expect(page.get_by_role("heading", name="Operations", level=1, exact=True)).to_be_visible()

    # The organizations, found by slug: plan, status, members, this month's usage.
    page.locator("#content-main").get_by_role("link", name="Organizations", exact=True).click()
    expect(page.get_by_role("heading", name="Select organization to view")).to_be_visible()
    page.locator("#searchbar").fill(SLUG)
    page.get_by_role("button", name="Search", exact=True).click()
    row = page.locator("#result_list tbody tr", has=page.get_by_role("link", name=SLUG, exact=True))
    expect(row).to_have_count(1)
    expect(row.locator("td.field-name")).to_have_text("Operated Co")
    expect(row.locator("td.field-status")).to_have_text("Active")
    expect(row.locator("td.field-member_count_display")).to_have_text("1")
    expect(row.locator("td.field-period_spend_display")).to_have_text("0.00")
    screenshot(page, "admin-organizations")
    _phone_checks(page)

    # One organization: its fields, members, operator log, and the actions that apply to it.
    row.get_by_role("link", name=SLUG, exact=True).click()
    expect(_status(page)).to_have_text("Active")
    expect(page.get_by_role("cell", name=f"owner@{SLUG}.example.com")).to_be_visible()
    expect(page.get_by_role("cell", name="Nothing yet.")).to_be_visible()
    expect(page.get_by_role("link", name=f"Resume organization: {SLUG}")).to_have_count(0)
    screenshot(page, "admin-organization")
    _phone_checks(page)

    # Suspend, with a reason, by a named button.
    page.get_by_role("link", name=f"Suspend organization: {SLUG}").click()
    expect(page.get_by_role("heading", name=f"Suspend organization: {SLUG}")).to_be_visible()
    expect(page.get_by_text("status active")).to_be_visible()
    submit = page.get_by_role("button", name="Suspend organization", exact=True)
    expect(submit).to_have_count(1)
    assert _unnamed_buttons(page) == []
    page.get_by_label("Reason").fill(REASON)
    screenshot(page, "admin-organization-suspend")
    _phone_checks(page)
    submit.click()

    expect(page.get_by_text(f"{SLUG} is suspended: its API calls, jobs and portal are refused.")).to_be_visible()
    expect(_status(page)).to_have_text("Suspended")
    logged = page.locator("fieldset", has=page.get_by_role("heading", name="Operator log (latest 20)"))
    entry = logged.locator("tbody tr").first
    expect(entry).to_contain_text("organization.suspended")
    expect(entry).to_contain_text(OPERATOR)
    expect(entry).to_contain_text(REASON)
    expect(page.get_by_role("link", name=f"Suspend organization: {SLUG}")).to_have_count(0)
    expect(page.get_by_role("link", name=f"Resume organization: {SLUG}")).to_be_visible()
    screenshot(page, "admin-organization-suspended")
    _phone_checks(page)

    # What the operator's click did: the status, both logs (the organization's own and the platform's).
    organization.refresh_from_db()
    assert organization.status == Organization.Status.SUSPENDED
    action = OperatorAction.objects.get(organization_slug=SLUG, action="organization.suspended")
    assert (action.actor_label, action.reason, action.organization_id) == (OPERATOR, REASON, organization.pk)
    with schema_context(organization.schema_name):
        event = AuditEvent.objects.get(action="organization.status_changed")
    tenant_connection().set_schema_to_public()
    assert (event.actor_kind, event.actor_label) == ("operator", OPERATOR)
    assert event.metadata == {"from": "active", "to": "suspended", "reason": REASON}

    # The organization's portal is refused (the web process forgot its cached resolution on commit).
    refused = page.context.new_page()
    try:
        answer = refused.goto(f"{portal}/")
        assert answer is not None and answer.status == 403
        expect(refused.get_by_text("This organization is suspended.")).to_be_visible()
    finally:
        refused.close()

    # The platform's operator log lists it too.
    page.get_by_role("link", name="Home").first.click()
    page.locator("#content-main").get_by_role("link", name="Operator actions", exact=True).click()
    page.locator("#searchbar").fill(SLUG)
    page.get_by_role("button", name="Search", exact=True).click()
    logged_row = page.locator("#result_list tbody tr")
    expect(logged_row).to_have_count(1)
    expect(logged_row.locator("td.field-action")).to_have_text("organization.suspended")
    expect(logged_row.locator("td.field-reason")).to_have_text(REASON)
    _phone_checks(page)

    # Resume: the same way back, and the portal answers again.
    page.goto(f"{origin}/admin/tenants/organization/{organization.pk}/change/")
    page.get_by_role("link", name=f"Resume organization: {SLUG}").click()
    page.get_by_label("Reason").fill(f"Paid ({RUN})")
    page.get_by_role("button", name="Resume organization", exact=True).click()
    expect(page.get_by_text(f"{SLUG} is active again.")).to_be_visible()
    expect(_status(page)).to_have_text("Active")
    reopened = page.context.new_page()
    try:
        answer = reopened.goto(f"{portal}/")
        assert answer is not None and answer.status == 200
        expect(reopened.get_by_role("heading", name="Sign in to Operated Co")).to_be_visible()
    finally:
        reopened.close()


def test_operator_sees_every_deployment_with_named_actions(
    page: Any, portal_server: LiveServer, operator_secret: str
) -> None:
    from playwright.sync_api import expect

    origin = portal_server.url
    page.goto(f"{origin}/admin/")
    page.get_by_label("Email address").fill(OPERATOR)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_label("Code").fill(_code(operator_secret))
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url(f"{origin}/admin/")

    page.locator("#content-main").get_by_role("link", name="Deployments", exact=True).click()
    expect(page.get_by_role("heading", name="Deployments")).to_be_visible()
    # Every row's actions are buttons that name the deployment they act on: its breaker (reset or
    # open, as its state allows) and disable or enable; its reason field is labelled.
    rows = page.evaluate(
        """() => [...document.querySelectorAll('#deployments tbody tr')].map(tr => {
            const cells = tr.querySelectorAll('td');
            return {
                deployment: `${cells[0].innerText.trim()}/${cells[1].innerText.trim()}`,
                buttons: [...tr.querySelectorAll('button')].map(b => b.getAttribute('aria-label') || ''),
            };
        })"""
    )
    assert rows, "no deployments listed"
    for row in rows:
        deployment = row["deployment"]
        breaker = [
            name for name in row["buttons"] if re.fullmatch(rf"(Reset|Open) breaker of {re.escape(deployment)}", name)
        ]
        switch = [name for name in row["buttons"] if re.fullmatch(rf"(Disable|Enable) {re.escape(deployment)}", name)]
        assert len(breaker) == 1 and len(switch) == 1 and len(row["buttons"]) == 2, row
    first = page.locator("#deployments tbody tr").first
    expect(first.get_by_role("button", name=rows[0]["buttons"][0], exact=True)).to_be_visible()
    expect(first.get_by_label(f"Reason for {rows[0]['deployment'].split('/', 1)[1]}")).to_have_count(1)
    assert _unnamed_buttons(page) == []
    screenshot(page, "admin-deployments")
    _phone_checks(page)
