"""The Members page: members with their roles, open invitations and the invite form for those who
manage members; read-only for the others, whose POSTs the server refuses; a constant number of
queries whatever the number of members."""

from __future__ import annotations

import re
from typing import Any

from django.core import mail
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.accounts.models import User
from apps.billing.models import Plan
from apps.rbac.models import Invitation, Membership, Role
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from tests.factories import member_make


def _roomy(organization: Organization) -> None:
    organization.plan = Plan.objects.get(code="enterprise")
    organization.save(update_fields=["plan"])
    organization_cache_forget()


def _client(organization: Organization, user: User) -> Client:
    client = Client(HTTP_HOST=f"{organization.slug}.localhost")
    client.force_login(user)
    return client


def _membership(user: User, organization: Organization) -> Membership:
    return Membership.objects.get(user=user, organization=organization)


def test_an_owner_sees_and_uses_every_control(tenant: Organization) -> None:
    _roomy(tenant)
    owner = _client(tenant, member_make(organization=tenant, role=Role.OWNER))
    developer = member_make(organization=tenant, role=Role.DEVELOPER)
    page = owner.get("/members/")
    assert page.status_code == 200
    html = page.content.decode()
    assert developer.email in html and "Send invitation" in html and 'name="role"' in html
    assert f'action="/members/{_membership(developer, tenant).pk}/remove/"' in html
    assert '<a href="/members/" aria-current="page">Members</a>' in html  # the sidebar's real link

    sent = owner.post("/members/", {"email": "colleague@example.com", "role": "viewer"})
    assert sent.status_code == 302 and sent["Location"] == "/members/"
    assert any("colleague@example.com" in m.to for m in mail.outbox)
    assert re.search(rf"http://{tenant.slug}\.localhost/invitations/\S+/", str(mail.outbox[-1].body))
    listed = owner.get("/members/").content.decode()
    assert "colleague@example.com" in listed and "Revoke" in listed

    membership = _membership(developer, tenant)
    # Without HTMX: back to the page; with HTMX: the row, in place.
    assert owner.post(f"/members/{membership.pk}/role/", {"role": "billing"}).status_code == 302
    assert _membership(developer, tenant).role == Role.BILLING
    row = owner.post(f"/members/{membership.pk}/role/", {"role": "viewer"}, HTTP_HX_REQUEST="true")
    assert row.status_code == 200 and row.content.decode().lstrip().startswith(f'<tr id="member-{membership.pk}"')
    assert _membership(developer, tenant).role == Role.VIEWER

    invitation = Invitation.objects.get(organization=tenant, email="colleague@example.com")
    assert owner.post(f"/members/invitations/{invitation.pk}/revoke/").status_code == 302
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None

    assert owner.post(f"/members/{membership.pk}/remove/").status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()


def test_a_refused_change_is_explained(tenant: Organization) -> None:
    only_owner = Membership.objects.get(organization=tenant, role=Role.OWNER)
    owner = _client(tenant, only_owner.user)
    row = owner.post(f"/members/{only_owner.pk}/role/", {"role": "viewer"}, HTTP_HX_REQUEST="true")
    assert row.status_code == 200 and "must keep an owner" in row.content.decode()
    assert _membership(only_owner.user, tenant).role == Role.OWNER
    page = owner.post("/members/", {"email": "not an address", "role": "viewer"})
    assert page.status_code == 400 and "Enter a valid email address" in page.content.decode()


def test_an_admin_is_not_offered_the_owner_role_nor_controls_over_owners(tenant: Organization) -> None:
    _roomy(tenant)
    admin = _client(tenant, member_make(organization=tenant, role=Role.ADMIN))
    owner_membership = Membership.objects.get(organization=tenant, role=Role.OWNER)
    html = admin.get("/members/").content.decode()
    assert '<option value="owner"' not in html and '<option value="admin"' in html
    assert f"/members/{owner_membership.pk}/remove/" not in html
    assert f"/members/{owner_membership.pk}/role/" not in html
    refused = admin.post("/members/", {"email": "boss@example.com", "role": "owner"})
    assert refused.status_code == 400 and not Invitation.objects.filter(email="boss@example.com").exists()


def test_a_viewer_sees_no_controls_and_is_refused_when_posting(tenant: Organization) -> None:
    viewer_user = member_make(organization=tenant, role=Role.VIEWER)
    viewer = _client(tenant, viewer_user)
    developer = member_make(organization=tenant, role=Role.DEVELOPER)
    page = viewer.get("/members/")
    assert page.status_code == 200
    html = page.content.decode()
    assert developer.email in html
    assert "Send invitation" not in html and "<select" not in html and "Remove" not in html
    membership = _membership(developer, tenant)
    assert viewer.post("/members/", {"email": "sneaky@example.com", "role": "viewer"}).status_code == 403
    assert viewer.post(f"/members/{membership.pk}/role/", {"role": "owner"}).status_code == 403
    assert viewer.post(f"/members/{membership.pk}/remove/").status_code == 403
    assert _membership(developer, tenant).role == Role.DEVELOPER
    assert not Invitation.objects.filter(email="sneaky@example.com").exists()


def test_another_organizations_member_gets_nothing(two_tenants: tuple[Organization, Organization]) -> None:
    organization_a, organization_b = two_tenants
    owner_of_b = member_make(organization=organization_b, role=Role.OWNER)
    developer_of_a = member_make(organization=organization_a, role=Role.DEVELOPER)
    on_a = Client(HTTP_HOST=f"{organization_a.slug}.localhost")
    on_a.force_login(owner_of_b)
    assert on_a.get("/members/").status_code == 403
    assert on_a.post(f"/members/{_membership(developer_of_a, organization_a).pk}/remove/").status_code == 403
    # B's owner on B's own host can't reach A's member by id either.
    on_b = _client(organization_b, owner_of_b)
    membership_a = _membership(developer_of_a, organization_a)
    assert on_b.post(f"/members/{membership_a.pk}/role/", {"role": "viewer"}).status_code == 404
    assert on_b.post(f"/members/{membership_a.pk}/remove/").status_code == 404
    assert Membership.objects.filter(pk=membership_a.pk, role=Role.DEVELOPER).exists()
    assert developer_of_a.email not in on_b.get("/members/").content.decode()


def test_the_page_costs_the_same_queries_for_10_and_100_members(tenant: Organization, settings: Any) -> None:
    # Per-process caches kept through the test on a loaded machine: the counts are the page's own.
    settings.TENANT_RESOLUTION_CACHE_SECONDS = settings.MEMBERSHIP_CACHE_SECONDS = 600
    owner = _client(tenant, member_make(organization=tenant, role=Role.OWNER))
    for _ in range(9):
        member_make(organization=tenant, role=Role.VIEWER)
    owner.get("/members/")  # warm per-process caches (tenant resolution, permissions)
    with CaptureQueriesContext(connection) as ten:
        assert owner.get("/members/").status_code == 200
    for _ in range(90):
        member_make(organization=tenant, role=Role.DEVELOPER)
    owner.get("/members/")  # new members forgot this process's cached permissions: warm again
    with CaptureQueriesContext(connection) as hundred:
        page = owner.get("/members/")
    html = page.content.decode()
    # A page of 50 (in the order they joined), the count of all, and a named link to the next page.
    assert page.status_code == 200 and html.count('<tr id="member-') == 50
    total = Membership.objects.filter(organization=tenant).count()
    assert f"{total} members" in html and re.search(r'rel="next" href="\?members_after=\d+#members-heading"', html)
    assert len(hundred.captured_queries) == len(ten.captured_queries), (
        [q["sql"][:90] for q in ten.captured_queries],
        [q["sql"][:90] for q in hundred.captured_queries],
    )
    assert len(ten.captured_queries) <= 12
    assert not any("OFFSET" in q["sql"] for q in hundred.captured_queries)
