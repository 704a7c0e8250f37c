"""In a real browser: sign in on the platform host (the handover posts its token to the organization's
host), the organization's own sign-in page offers a passkey, the Members and API keys pages come in
pages of 50 with named links, and a member leaves after confirming. Screenshots at desktop and phone."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from allauth.account.models import EmailAddress
from django.utils import timezone

from apps.accounts.models import User
from apps.apikeys.keys import key_generate, key_hash
from apps.apikeys.models import ApiKey
from apps.billing.models import Plan
from apps.rbac.models import Invitation, Membership, Role
from apps.tenants.connection import tenant_connection
from tests.conftest import LiveDb
from tests.e2e.conftest import LiveServer, overflowing, screenshot, unlabeled_fields

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
SLUG = f"e2e-pages-{RUN}"
PASSWORD = "a-long-enough-passphrase-42"


@pytest.fixture
def organization(live_db: LiveDb) -> Any:
    organization = live_db.organization(slug=SLUG, name="Paged Co")
    organization.plan = Plan.objects.get(code="enterprise")
    organization.save(update_fields=["plan"])
    owner = User.objects.create_user(email=f"boss-{RUN}@pages.example", password=PASSWORD)
    EmailAddress.objects.create(user=owner, email=owner.email, verified=True, primary=True)
    Membership.objects.create(organization=organization, user=owner, role=Role.OWNER)
    people = User.objects.bulk_create(User(email=f"person{n:02d}-{RUN}@pages.example", password="!") for n in range(70))
    Membership.objects.bulk_create(
        Membership(organization=organization, user=user, role=[Role.VIEWER, Role.DEVELOPER][n % 2])
        for n, user in enumerate(people)
    )
    later = timezone.now() + timedelta(days=7)
    Invitation.objects.bulk_create(
        Invitation(
            organization=organization,
            email=f"invitee{n:02d}-{RUN}@pages.example",
            role=Role.VIEWER,
            token_hash=uuid.uuid4().hex * 2,
            invited_by=owner.email,
            expires_at=later,
        )
        for n in range(8)
    )
    keys = []
    for n in range(65):
        prefix, secret, _ = key_generate()
        keys.append(
            ApiKey(
                organization=organization,
                name=f"service key {n:02d}",
                prefix=prefix,
                secret_hash=key_hash(secret),
                scopes=["jobs:read", "llm:invoke"][: 1 + n % 2],
                created_by_label=owner.email,
            )
        )
    ApiKey.objects.bulk_create(keys)
    tenant_connection().set_schema_to_public()
    yield organization, owner, people[0]
    User.objects.filter(email__endswith="@pages.example").delete()


def test_paged_members_and_keys_pages(page: Any, portal_server: LiveServer, organization: Any) -> None:
    from playwright.sync_api import expect

    _organization, owner, _member = organization
    # The organization's own sign-in page offers the passkey too.
    page.goto(portal_server.organization_url(SLUG) + "/")
    expect(page.get_by_role("heading", name="Sign in to Paged Co")).to_be_visible()
    expect(page.get_by_role("button", name="Sign in with a passkey")).to_be_visible()
    screenshot(page, "organization-sign-in")

    # Signed in on the platform host, the handover form is posted to the organization's host.
    page.goto(f"{portal_server.url}/accounts/login/")
    page.get_by_label("Email").fill(owner.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign In", exact=True).click()
    page.wait_for_url(portal_server.organization_url(SLUG) + "/")

    page.goto(portal_server.organization_url(SLUG) + "/members/")
    expect(page.get_by_text(re.compile(r"^72 members and 8 open invitations"))).to_be_visible()
    expect(page.locator('tr[id^="member-"]')).to_have_count(50)
    screenshot(page, "members-paged")
    assert unlabeled_fields(page) == []
    page.set_viewport_size({"width": 390, "height": 844})
    assert overflowing(page) <= 0
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("link", name="Next members →").click()
    expect(page.locator('tr[id^="member-"]')).to_have_count(22)
    expect(page.get_by_role("link", name="← Previous members")).to_be_visible()
    screenshot(page, "members-page-2")

    page.goto(portal_server.organization_url(SLUG) + "/keys/")
    expect(page.get_by_text("service key 64")).to_be_visible()
    expect(page.get_by_text("service key 14", exact=True)).to_have_count(0)
    screenshot(page, "keys-paged")
    page.set_viewport_size({"width": 390, "height": 844})
    assert overflowing(page) <= 0
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("link", name="Older keys →").click()
    expect(page.get_by_text("service key 14", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="← Newer keys")).to_be_visible()
    screenshot(page, "keys-page-2")


def test_a_member_leaves(page: Any, portal_server: LiveServer, organization: Any) -> None:
    from playwright.sync_api import expect

    _organization, _owner, member = organization
    User.objects.filter(pk=member.pk).update(password="")
    member.set_password(PASSWORD)
    member.save(update_fields=["password"])
    EmailAddress.objects.create(user=member, email=member.email, verified=True, primary=True)
    page.goto(portal_server.organization_url(SLUG) + "/")
    page.get_by_label("Email").fill(member.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.goto(portal_server.organization_url(SLUG) + "/members/")
    page.get_by_role("link", name="Leave Paged Co").click()
    expect(page.get_by_role("heading", name="Leave Paged Co?")).to_be_visible()
    screenshot(page, "leave-confirm")
    page.get_by_role("button", name="Leave Paged Co").click()
    expect(page.get_by_text("You left Paged Co.")).to_be_visible()
    assert not Membership.objects.filter(user=member, organization__slug=SLUG).exists()
