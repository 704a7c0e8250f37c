"""Two-factor authentication in a real browser: an owner opens Security, is told to set up their
own second factor first, activates an authenticator app (the code computed from the secret shown
on the page), keeps the recovery codes, requires MFA of every member, signs out, and signs in
again with password and code."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value

from apps.accounts.models import User
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.e2e.conftest import LiveServer, overflowing, screenshot, unlabeled_fields

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"e2e-mfa-{RUN}"
EMAIL = f"owner@{SLUG}.example.com"  # the owner organization_make creates
PASSWORD = "a-long-enough-passphrase-42"


def _code(secret: str) -> str:
    return str(format_hotp_value(hotp_value(secret, int(time.time()) // 30)))


@pytest.fixture
def organization(live_db: LiveDb) -> Any:
    created = live_db.organization(slug=SLUG, name="MFA End to End")
    tenant_connection().set_schema_to_public()
    owner = User.objects.get(email=EMAIL)
    owner.set_password(PASSWORD)
    owner.save(update_fields=["password"])
    EmailAddress.objects.update_or_create(user=owner, email=EMAIL, defaults={"verified": True, "primary": True})
    yield created
    tenant_connection().set_schema_to_public()
    User.objects.filter(email=EMAIL).delete()


def test_owner_sets_up_totp_requires_mfa_and_signs_in_with_a_code(
    page: Any, portal_server: LiveServer, organization: Organization
) -> None:
    from playwright.sync_api import expect

    home = portal_server.organization_url(SLUG)
    page.goto(f"{home}/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name=re.compile(r"^sign in$", re.IGNORECASE)).click()
    page.wait_for_url(f"{home}/")

    page.get_by_role("navigation", name="Portal").get_by_role("link", name="Security").click()
    expect(page.get_by_role("heading", name="Security", level=1)).to_be_visible()
    assert unlabeled_fields(page) == []
    screenshot(page, "security-settings")
    page.get_by_label("Require two-factor authentication for all members").check()
    page.get_by_role("button", name="Save security settings").click()
    expect(page.get_by_text("Set up two-factor authentication for yourself first.")).to_be_visible()

    page.get_by_role("link", name="Manage your two-factor authentication").click()
    expect(page.get_by_role("heading", name="Two-Factor Authentication", level=1)).to_be_visible()
    screenshot(page, "mfa-index")
    page.locator('a[href="/accounts/2fa/totp/activate/"]').click()
    # allauth asks for the password before a factor is added.
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", name="Activate Authenticator App")).to_be_visible()
    assert unlabeled_fields(page) == []
    screenshot(page, "mfa-activate-totp")
    secret = page.locator("#authenticator_secret").input_value()
    page.get_by_label("Authenticator code").fill(_code(secret))
    page.get_by_role("button", name="Activate").click()
    expect(page.get_by_role("heading", name="Recovery Codes")).to_be_visible()
    screenshot(page, "mfa-recovery-codes")

    page.goto(f"{home}/settings/security/")
    page.get_by_label("Require two-factor authentication for all members").check()
    page.get_by_role("button", name="Save security settings").click()
    expect(page.get_by_text("Two-factor authentication is now required for all members.")).to_be_visible()
    screenshot(page, "security-settings-required")
    assert overflowing(page) <= 0

    page.locator("details.usermenu summary").click()
    page.get_by_role("button", name="Sign out").click()
    page.goto(f"{home}/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name=re.compile(r"^sign in$", re.IGNORECASE)).click()
    expect(page.get_by_role("heading", name="Two-Factor Authentication")).to_be_visible()
    assert unlabeled_fields(page) == []
    screenshot(page, "mfa-authenticate")
    page.get_by_label("Code").fill(_code(secret))
    page.get_by_role("button", name=re.compile(r"^sign in$", re.IGNORECASE)).click()
    page.wait_for_url(f"{home}/")
    expect(page.get_by_role("navigation", name="Portal")).to_be_visible()
