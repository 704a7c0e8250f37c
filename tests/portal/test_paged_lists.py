"""Members, open invitations and API keys in pages of 50 (keyset cursors, never OFFSET), with named
Next/Previous links; each organization sees only its own rows. And leaving an organization."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.accounts.models import User
from apps.apikeys.keys import key_generate, key_hash
from apps.apikeys.models import ApiKey
from apps.audit.models import AuditEvent
from apps.billing.models import Plan
from apps.rbac.models import Invitation, Membership, Role
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from tests.factories import member_make


def _client(organization: Organization, user: User) -> Client:
    client = Client(HTTP_HOST=f"{organization.slug}.localhost")
    client.force_login(user)
    return client


def _keys(organization: Organization, count: int, label: str) -> None:
    rows = []
    for n in range(count):
        prefix, secret, _ = key_generate()
        rows.append(
            ApiKey(
                organization=organization,
                name=f"{label} {n}",
                prefix=prefix,
                secret_hash=key_hash(secret),
                scopes=["jobs:read"],
                created_by_label="tests",
            )
        )
    ApiKey.objects.bulk_create(rows)


def _names(html: str) -> list[str]:
    return re.findall(r'<td data-label="Name"><strong>([^<]+)</strong>', html)


def _link(html: str, rel: str) -> str | None:
    found = re.search(rf'rel="{rel}" href="\?([^"#]+)(?:#[^"]*)?"', html)
    return found.group(1).replace("&amp;", "&") if found else None


def test_keys_come_in_pages_newest_first_with_constant_queries(
    two_tenants: tuple[Organization, Organization], settings: Any
) -> None:
    settings.TENANT_RESOLUTION_CACHE_SECONDS = settings.MEMBERSHIP_CACHE_SECONDS = 600
    tenant_a, tenant_b = two_tenants
    owner = member_make(organization=tenant_a, role=Role.OWNER)
    _keys(tenant_a, 120, "a")
    _keys(tenant_b, 30, "b")
    client = _client(tenant_a, owner)
    client.get("/keys/")
    with CaptureQueriesContext(connection) as first_queries:
        first = client.get("/keys/").content.decode()
    assert _names(first) == [f"a {n}" for n in range(119, 69, -1)]
    assert _link(first, "prev") is None and ">Older keys →</a>" in first

    seen = _names(first)
    page = first
    while (older := _link(page, "next")) is not None:
        with CaptureQueriesContext(connection) as deep:
            page = client.get(f"/keys/?{older}").content.decode()
        assert len(deep) == len(first_queries)
        assert not any("OFFSET" in q["sql"] for q in deep.captured_queries)
        seen += _names(page)
    assert seen == [f"a {n}" for n in range(119, -1, -1)]  # every key once, none of tenant B's
    newer = _link(page, "prev")
    assert newer is not None and "← Newer keys" in page
    back = client.get(f"/keys/?{newer}").content.decode()
    assert _names(back) == [f"a {n}" for n in range(69, 19, -1)]


def test_hostile_cursors_are_ignored(tenant: Organization) -> None:
    owner = member_make(organization=tenant, role=Role.OWNER)
    client = _client(tenant, owner)
    for cursor in ("-1", "abc", "9" * 40, "1e9"):
        assert client.get("/keys/", {"before": cursor}).status_code == 200
        assert client.get("/members/", {"members_after": cursor, "invitations_before": cursor}).status_code == 200


def test_members_and_invitations_page_separately_and_keep_each_other_s_place(
    tenant: Organization, settings: Any
) -> None:
    settings.TENANT_RESOLUTION_CACHE_SECONDS = settings.MEMBERSHIP_CACHE_SECONDS = 600
    tenant.plan = Plan.objects.get(code="enterprise")
    tenant.save(update_fields=["plan"])
    organization_cache_forget()
    owner = member_make(organization=tenant, role=Role.OWNER)
    users = User.objects.bulk_create(User(email=f"m{n}@paged.example", password="!") for n in range(60))
    Membership.objects.bulk_create(Membership(organization=tenant, user=u, role=Role.VIEWER) for u in users)
    later = timezone.now() + timedelta(days=7)
    Invitation.objects.bulk_create(
        Invitation(
            organization=tenant, email=f"i{n}@paged.example", role=Role.VIEWER, token_hash=f"{n:064d}", expires_at=later
        )
        for n in range(55)
    )
    client = _client(tenant, owner)
    first = client.get("/members/").content.decode()
    assert first.count('<tr id="member-') == 50 and first.count("@paged.example</td>") == 50
    members_next = _link(first, "next")
    assert members_next is not None and members_next.startswith("members_after=")
    second = client.get(f"/members/?{members_next}").content.decode()
    assert second.count('<tr id="member-') == Membership.objects.filter(organization=tenant).count() - 50
    # The invitations' link on that page keeps the members' place.
    invitations_next = re.search(r'href="\?([^"#]*invitations_before=\d+[^"#]*)#invitations-heading"', second)
    assert invitations_next and "members_after=" in invitations_next.group(1)
    both = client.get("/members/?" + invitations_next.group(1).replace("&amp;", "&")).content.decode()
    assert both.count('<tr id="member-') == second.count('<tr id="member-')
    assert both.count("@paged.example</td>") == 5  # the 5 oldest invitations
    assert ">Next members →</a>" in first and ">Older invitations →</a>" in first


def test_a_member_leaves_after_confirming(two_tenants: tuple[Organization, Organization]) -> None:
    tenant_a, tenant_b = two_tenants
    viewer = member_make(organization=tenant_a, role=Role.VIEWER)
    member_make(organization=tenant_b, role=Role.VIEWER, email=viewer.email + ".b")
    Membership.objects.create(organization=tenant_b, user=viewer, role=Role.VIEWER)
    client = _client(tenant_a, viewer)
    page = client.get("/members/").content.decode()
    assert 'href="/members/leave/"' in page and "Leave Tenant A</a>" in page
    confirm = client.get("/members/leave/").content.decode()
    assert (
        "Leave Tenant A?" in confirm
        and '<button type="submit" class="button button--danger">Leave Tenant A</button>' in confirm
    )
    assert Membership.objects.filter(organization=tenant_a, user=viewer).exists()  # a GET changes nothing

    left = client.post("/members/leave/")
    assert left.status_code == 302 and left["Location"] == "/enter/"
    assert not Membership.objects.filter(organization=tenant_a, user=viewer).exists()
    assert Membership.objects.filter(organization=tenant_b, user=viewer).exists()
    with organization_schema(tenant_a):
        event = AuditEvent.objects.order_by("-id").first()
    tenant_connection().set_schema_to_public()
    assert event is not None and event.action == "membership.left" and event.metadata["user"] == viewer.email


def test_the_last_owner_is_not_offered_to_leave_and_is_refused(tenant: Organization) -> None:
    Membership.objects.filter(organization=tenant, role=Role.OWNER).delete()
    owner = member_make(organization=tenant, role=Role.OWNER)
    client = _client(tenant, owner)
    assert 'href="/members/leave/"' not in client.get("/members/").content.decode()
    refused = client.post("/members/leave/", follow=True)
    assert "The organization must keep an owner" in refused.content.decode()
    assert Membership.objects.filter(organization=tenant, user=owner).exists()
    # With a second owner, either may leave.
    member_make(organization=tenant, role=Role.OWNER)
    assert 'href="/members/leave/"' in client.get("/members/").content.decode()


def test_leaving_needs_to_be_a_member(two_tenants: tuple[Organization, Organization]) -> None:
    tenant_a, tenant_b = two_tenants
    outsider = member_make(organization=tenant_b, role=Role.OWNER)
    assert _client(tenant_a, outsider).post("/members/leave/").status_code == 403
