"""The portal's audit log page: newest first, filtered as the API filters, paged by keyset with a
constant number of queries, exports linked; per organization and per role."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.accounts.principals import Principal
from apps.audit.models import AuditEvent
from apps.audit.services import audit_record
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization
from tests.factories import member_make
from tests.portal.conftest import ClientFor

ALICE = Principal(kind="user", id="1", label="alice@example.com")
BOT = Principal(kind="api_key", id="9", label="deploy bot (cos_abc)")


def record(organization: Organization, count: int, *, action: str = "thing.done", actor: Principal = ALICE) -> None:
    with organization_schema(organization):
        for number in range(count):
            audit_record(organization=organization, actor=actor, action=action, metadata={"n": number})
    tenant_connection().set_schema_to_public()


def signed_in(client_for: ClientFor, organization: Organization, role: str) -> Client:
    client = client_for(f"{organization.slug}.localhost")
    client.force_login(member_make(organization=organization, role=role))
    return client


def counted() -> CaptureQueriesContext:
    # Django keeps at most 9,000 logged queries and counts a capture by index into that log: with a
    # full log (thousands of inserts above) every capture would count zero. Start from an empty log.
    connection.queries_log.clear()
    return CaptureQueriesContext(connection)


def sequences(html: str) -> list[int]:
    return [int(found) for found in re.findall(r'<td data-label="#" class="muted"[^>]*>(\d+)</td>', html)]


def test_newest_first_filters_and_export_links(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client = signed_in(client_for, organization, "admin")
    record(organization, 2, action="job.submitted")
    record(organization, 1, action="budget.set", actor=BOT)
    page = client.get("/audit/")
    assert page.status_code == 200
    html = page.content.decode()
    shown = sequences(html)
    assert shown == sorted(shown, reverse=True) and len(shown) >= 3
    assert html.index("<code>budget.set</code>") < html.index("<code>job.submitted</code>")  # newest first
    assert 'href="/audit/"' in html  # in the nav
    for label in ("Action", "Actor", "From (UTC)", "Until (UTC)"):
        assert f">{label}</label>" in html
    assert 'href="/api/v1/audit-events/export?format=csv"' in html

    by_action = client.get("/audit/", {"action": "job.submitted"}).content.decode()
    assert by_action.count("<code>job.submitted</code>") == 2 and "budget.set" not in by_action
    assert 'href="/api/v1/audit-events/export?format=jsonl&amp;action=job.submitted"' in by_action
    by_actor = client.get("/audit/", {"actor": BOT.label}).content.decode()
    assert "<code>budget.set</code>" in by_actor and "<code>job.submitted</code>" not in by_actor
    future = client.get("/audit/", {"occurred_after": "2999-01-01T00:00"}).content.decode()
    assert sequences(future) == [] and "No events match these filters." in future
    invalid = client.get("/audit/", {"occurred_after": "yesterday-ish"})
    assert invalid.status_code == 400 and sequences(invalid.content.decode()) == []

    # The export link works with the member's session on the organization's host.
    export = client.get("/api/v1/audit-events/export?format=jsonl&action=job.submitted")
    assert export.status_code == 200
    assert b"".join(export.streaming_content).count(b'"action":"job.submitted"') == 2  # type: ignore[attr-defined]


def test_keyset_pages_walk_the_whole_log_with_constant_queries(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, settings: Any
) -> None:
    # The per-process tenant and membership caches outlive the test on a loaded machine (their
    # 5 s default doesn't): the counts compare the page's own queries.
    settings.TENANT_RESOLUTION_CACHE_SECONDS = settings.MEMBERSHIP_CACHE_SECONDS = 600
    organization = two_tenants[0]
    client = signed_in(client_for, organization, "billing")  # billing reads the audit log
    record(organization, 60)
    client.get("/audit/")  # warm per-process caches (membership, tenant)
    with counted() as small:
        first = client.get("/audit/").content.decode()
    record(organization, 500)
    with counted() as large:
        client.get("/audit/")
    assert len(large) == len(small), [query["sql"] for query in large]
    assert not any("OFFSET" in query["sql"] for query in large)

    # Older pages by cursor, then back to newer: every event once, in order.
    seen: list[int] = []
    html = client.get("/audit/").content.decode()
    while True:
        seen += sequences(html)
        older = re.search(r'rel="next" href="\?before=(\d+)"', html)
        if older is None:
            break
        with counted() as deep:
            html = client.get("/audit/", {"before": older.group(1)}).content.decode()
        assert len(deep) <= len(large) + 1  # a deep page costs what the first one does
    # Pages go by id (events are chained after commit; ids may skip a number, sequences don't).
    with organization_schema(organization):
        every = list(AuditEvent.objects.order_by("-id").values_list("id", flat=True))
    tenant_connection().set_schema_to_public()
    assert seen == every and sequences(first)[0] + 500 == seen[0]
    newer = re.search(r'rel="prev" href="\?after=(\d+)"', html)
    assert newer is not None
    back = client.get("/audit/", {"after": newer.group(1)}).content.decode()
    assert sequences(back) == [s for s in seen if s > int(newer.group(1))][-50:]


def test_one_organizations_events_never_show_in_another(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization_a, organization_b = two_tenants
    record(organization_a, 1, action="secret.of.a")
    client_b = signed_in(client_for, organization_b, "owner")
    record(organization_b, 1, action="own.of.b")
    page_b = client_b.get("/audit/").content.decode()
    assert "own.of.b" in page_b and "secret.of.a" not in page_b
    asked = client_b.get("/audit/", {"action": "secret.of.a"}).content.decode()
    assert sequences(asked) == [] and "No events match these filters." in asked


@pytest.mark.parametrize("role", ["viewer", "developer"])
def test_roles_without_audit_read_neither_see_nor_open_it(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, role: str
) -> None:
    client = signed_in(client_for, two_tenants[0], role)
    assert 'href="/audit/"' not in client.get("/").content.decode()
    assert client.get("/audit/").status_code == 403
    assert client.get("/api/v1/audit-events/export?format=csv").status_code == 403
