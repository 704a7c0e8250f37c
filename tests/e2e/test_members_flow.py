"""Inviting a colleague in a real browser: the owner invites → the colleague opens the link from the
development mailbox in another browser, signs in and accepts → the owner makes them Viewer (inline,
HTMX) → the viewer sees no invite form, and the server refuses the invite when posted anyway."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from apps.accounts.models import User
from apps.accounts.services import email_verified_ensure
from apps.rbac.models import Membership, Role
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.e2e.conftest import DESKTOP, LiveServer, screenshot, unlabeled_fields
from tests.factories import organization_make

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"e2e-team-{RUN}"
OWNER = f"owner-{RUN}@e2e-team.example"
COLLEAGUE = f"colleague-{RUN}@e2e-team.example"
PASSWORD = "a-long-enough-passphrase-42"


def _account(email: str) -> User:
    user, _created = User.objects.get_or_create(email=email)
    user.set_password(PASSWORD)
    user.save()
    email_verified_ensure(user=user)
    return user


@pytest.fixture
def team(live_db: LiveDb) -> Any:
    organization = organization_make(slug=SLUG, name="Team End to End", plan_code="pro", owner_email=OWNER)
    live_db.track(organization)
    tenant_connection().set_schema_to_public()
    _account(OWNER)
    _account(COLLEAGUE)
    yield organization
    tenant_connection().set_schema_to_public()
    User.objects.filter(email__in=[OWNER, COLLEAGUE]).delete()


def _sign_in(page: Any, url: str, email: str) -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In", exact=True).click()


def test_invite_accept_and_make_viewer(page: Any, browser: Any, portal_server: LiveServer, team: Organization) -> None:
    from playwright.sync_api import expect

    origin = portal_server.organization_url(SLUG)
    page.goto(f"{origin}/accounts/login/?next=/members/")
    _sign_in(page, origin, OWNER)
    page.wait_for_url(f"{origin}/members/")
    expect(page.get_by_role("heading", name="Members", level=1)).to_be_visible()
    assert unlabeled_fields(page) == []
    page.get_by_label("Email address").fill(COLLEAGUE)
    page.get_by_label("Role", exact=True).select_option("developer")
    page.get_by_role("button", name="Send invitation").click()
    expect(page.get_by_text(f"Invitation sent to {COLLEAGUE}.")).to_be_visible()
    expect(page.get_by_role("button", name=f"Revoke the invitation to {COLLEAGUE}")).to_be_visible()
    screenshot(page, "members-owner")

    colleague_context = browser.new_context(viewport=DESKTOP)
    try:
        colleague = colleague_context.new_page()
        colleague.set_default_timeout(15_000)
        colleague.goto(f"{portal_server.url}/dev/mail/?to={COLLEAGUE}")
        link = colleague.locator('a[href*="/invitations/"]').first.get_attribute("href")
        assert link and link.startswith(f"{origin}/invitations/"), link
        colleague.goto(link)
        expect(colleague.get_by_role("heading", name="Join Team End to End")).to_be_visible()
        screenshot(colleague, "invitation-signed-out")
        colleague.get_by_role("link", name="Sign in to accept").click()
        _sign_in(colleague, origin, COLLEAGUE)
        colleague.wait_for_url(link)
        colleague.get_by_role("button", name="Accept the invitation").click()
        colleague.wait_for_url(f"{origin}/")
        expect(colleague.get_by_text("Welcome to Team End to End.")).to_be_visible()

        # The owner makes the colleague a Viewer, in place.
        page.reload()
        with page.expect_response(lambda answer: answer.url.endswith("/role/")) as changed:
            page.get_by_label(f"Role of {COLLEAGUE}").select_option("viewer")  # HTMX posts on change
        assert changed.value.status == 200
        assert changed.value.request.headers.get("hx-request") == "true"
        expect(page.get_by_label(f"Role of {COLLEAGUE}")).to_have_value("viewer")
        tenant_connection().set_schema_to_public()
        assert Membership.objects.get(organization=team, user__email=COLLEAGUE).role == Role.VIEWER
        screenshot(page, "members-owner-after")

        colleague.goto(f"{origin}/members/")
        expect(colleague.get_by_role("heading", name="Members", level=1)).to_be_visible()
        expect(colleague.get_by_role("button", name="Send invitation")).to_have_count(0)
        expect(colleague.locator("select")).to_have_count(0)
        screenshot(colleague, "members-viewer")
        status = colleague.evaluate(
            """async (email) => {
                const token = JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken'];
                const body = new URLSearchParams({email, role: 'viewer', csrfmiddlewaretoken: token});
                const answer = await fetch('/members/', {method: 'POST', body});
                return answer.status;
            }""",
            f"sneaky-{RUN}@e2e-team.example",
        )
        assert status == 403
    finally:
        colleague_context.close()
