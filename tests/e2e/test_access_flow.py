"""The issue's path end to end, in a real browser: sign up → create a key → invite a colleague →
the colleague follows the invitation to sign-up (no organization of their own), verifies and lands
in the organization → the owner makes them Viewer → `cognitionos audit verify` reports the chain
intact, and the audit page lists the key's creation, the invitation and the role change."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.models import User
from apps.rbac.models import Membership, Role
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.e2e.conftest import DESKTOP, LiveServer, overflowing, screenshot, unlabeled_fields
from tests.e2e.test_keys_flow import (
    PASSWORD,
    RUN,
    SLUG,
    cleanup,  # noqa: F401  (the fixture: removes the organization and the owner sign_up makes)
    sign_up,
)
from tests.portal.conftest import (  # noqa: F401  (autouse here too)
    _fresh_rate_limits,  # the owner's address is test_keys_flow's: its verification mail must not be throttled there
)
from tests.support.processes import run_cognitionos

pytestmark = pytest.mark.integration

COLLEAGUE = f"access-colleague-{RUN}@e2e-acme.example"


@pytest.fixture
def colleague_cleanup(cleanup: None) -> Any:  # noqa: F811
    yield
    tenant_connection().set_schema_to_public()
    User.objects.filter(email=COLLEAGUE).delete()


def test_sign_up_key_invite_role_change_and_a_verified_audit_chain(
    page: Any, browser: Any, portal_server: LiveServer, colleague_cleanup: None
) -> None:
    from playwright.sync_api import expect

    origin = portal_server.organization_url(SLUG)
    sign_up(page, portal_server)

    page.goto(f"{origin}/keys/")
    page.get_by_label("Name").fill("access flow")
    page.get_by_label("llm:invoke").check()
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("heading", name="Your new key “access flow”")).to_be_visible()

    page.goto(f"{origin}/members/")
    page.get_by_label("Email address").fill(COLLEAGUE)
    page.get_by_label("Role", exact=True).select_option("developer")
    page.get_by_role("button", name="Send invitation").click()
    expect(page.get_by_text(f"Invitation sent to {COLLEAGUE}.")).to_be_visible()

    colleague_context = browser.new_context(viewport=DESKTOP)
    try:
        colleague = colleague_context.new_page()
        colleague.set_default_timeout(15_000)
        colleague.goto(f"{portal_server.url}/dev/mail/?to={COLLEAGUE}")
        link = colleague.locator('a[href*="/invitations/"]').first.get_attribute("href")
        assert link and link.startswith(f"{origin}/invitations/"), link
        colleague.goto(link)
        colleague.get_by_role("link", name="Create an account").click()
        # The invited sign-up: the address filled in, no organization to create.
        expect(colleague.get_by_label("Work email")).to_have_value(COLLEAGUE)
        expect(colleague.get_by_label("Organization name")).to_have_count(0)
        expect(colleague.get_by_text("You were invited to Keys End to End as developer")).to_be_visible()
        assert unlabeled_fields(colleague) == []
        screenshot(colleague, "signup-invited")
        colleague.set_viewport_size({"width": 390, "height": 844})
        assert overflowing(colleague) <= 0
        colleague.set_viewport_size(DESKTOP)
        colleague.get_by_label("Password", exact=True).fill(PASSWORD)
        colleague.get_by_label("Password (again)").fill(PASSWORD)
        colleague.get_by_role("button", name="Sign Up").click()
        expect(colleague.get_by_role("heading", name="Verify Your Email Address")).to_be_visible()
        colleague.goto(f"{portal_server.url}/dev/mail/?to={COLLEAGUE}")
        colleague.locator('a[href*="/accounts/confirm-email/"]').first.click()
        colleague.get_by_role("button", name="Confirm").click()
        colleague.wait_for_url(f"{origin}/")
        expect(colleague.get_by_text("Welcome to Keys End to End.")).to_be_visible()
        screenshot(colleague, "signup-invited-landed")
    finally:
        colleague_context.close()

    tenant_connection().set_schema_to_public()
    organization = Organization.objects.get(slug=SLUG)
    assert Membership.objects.get(organization=organization, user__email=COLLEAGUE).role == Role.DEVELOPER
    assert Membership.objects.filter(user__email=COLLEAGUE).count() == 1

    page.goto(f"{origin}/members/")
    with page.expect_response(lambda answer: answer.url.endswith("/role/")) as changed:
        page.get_by_label(f"Role of {COLLEAGUE}").select_option("viewer")
    assert changed.value.status == 200

    verified = run_cognitionos("audit", "verify", "--tenant", SLUG)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("OK: "), verified.stdout

    page.goto(f"{origin}/audit/")
    expect(page.get_by_role("heading", name="Audit log", level=1)).to_be_visible()
    for action in ("apikey.created", "invitation.created", "invitation.accepted", "membership.role_changed"):
        expect(page.get_by_role("cell", name=action, exact=True).first).to_be_visible()
    screenshot(page, "audit-access-flow")
