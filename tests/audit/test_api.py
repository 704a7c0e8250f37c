"""GET /api/v1/audit-events and its streamed export, through HTTP with an organization's API key."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.urls import resolve
from django_tenants.utils import schema_context
from rest_framework.test import APIClient

from apps.accounts.principals import Principal
from apps.apikeys.services import apikey_create
from apps.audit import selectors
from apps.audit.chain import ChainFields, event_hash
from apps.audit.models import AuditEvent
from apps.audit.services import audit_record
from apps.rbac.models import Role
from apps.rbac.permissions import Permission
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.audit.support import chained
from tests.conftest import ApiClientFor
from tests.factories import TEST_ACTOR, member_make

ALICE = Principal(kind="user", id="42", label="alice@example.com")
BOB = Principal(kind="api_key", id="7", label="ci key")


def _seed(organization: Organization) -> list[AuditEvent]:
    """Four events, chained."""
    return chained(
        organization,
        audit_record(organization=organization, actor=ALICE, action="budget.set", target=organization),
        audit_record(organization=organization, actor=BOB, action="job.submitted", metadata={"job": "1"}),
        audit_record(organization=organization, actor=ALICE, action="job.cancelled", metadata={"job": "1"}),
        audit_record(organization=organization, actor=BOB, action='=HYPERLINK("http://evil")'),
    )


def _export(client: APIClient, query: str) -> Any:
    response = client.get(f"/api/v1/audit-events/export?{query}")
    assert response.status_code == 200, response.content
    assert response.streaming
    return response, b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]


def test_list_is_newest_first_and_cursor_paginated(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    tenant_a = two_tenants[0]
    client = api_client_for(tenant_a)
    seeded = _seed(tenant_a)
    first = client.get("/api/v1/audit-events?limit=2").json()
    second = client.get(first["next"].replace("http://localhost", "")).json()
    listed = first["results"] + second["results"]
    assert [event["id"] for event in listed] == [event.pk for event in reversed(seeded)]
    assert [event["sequence"] for event in listed] == sorted((event["sequence"] for event in listed), reverse=True)
    newest = listed[0]
    assert newest["hash"] == seeded[-1].hash and newest["previous_hash"] == seeded[-2].hash
    assert set(newest) == {
        "id", "sequence", "occurred_at", "actor_kind", "actor_id", "actor_label", "action",
        "target_type", "target_id", "target_label", "metadata", "previous_hash", "hash",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("query", "actions"),
    [
        ("action=job.submitted", ["job.submitted"]),
        ("action_prefix=job.", ["job.cancelled", "job.submitted"]),
        ("actor=alice@example.com", ["job.cancelled", "budget.set"]),
        ("actor_id=7&actor_kind=api_key", ['=HYPERLINK("http://evil")', "job.submitted"]),
        ("target_type=tenants.Organization", ["budget.set"]),
    ],
)
def test_list_filters(
    query: str, actions: list[str], two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    seeded = _seed(two_tenants[0])
    if query.startswith("target_type"):
        query += f"&target_id={two_tenants[0].pk}"
    since = urlencode({"occurred_after": seeded[0].occurred_at.isoformat()})
    results = client.get(f"/api/v1/audit-events?{query}&{since}").json()
    assert [event["action"] for event in results["results"]] == actions


def test_list_time_range_and_bad_filters(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    seeded = _seed(two_tenants[0])
    after = seeded[1].occurred_at.isoformat()
    before = seeded[3].occurred_at.isoformat()
    response = client.get("/api/v1/audit-events", {"occurred_after": after, "occurred_before": before})
    assert [event["id"] for event in response.json()["results"]] == [seeded[2].pk, seeded[1].pk]
    bad = client.get("/api/v1/audit-events?occurred_after=yesterday&actor_kind=robot")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"


def test_export_jsonl_streams_every_matching_event_oldest_first_and_is_audited(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_a = two_tenants[0]
    client = api_client_for(tenant_a)
    seeded = _seed(tenant_a)
    monkeypatch.setattr(selectors, "EXPORT_BATCH", 2)  # several batches
    response, body = _export(client, "format=jsonl&action_prefix=job.")
    assert response["Content-Type"].startswith("application/jsonl")
    assert response["Content-Disposition"].startswith('attachment; filename="audit-tenant-a-')
    rows = [json.loads(line) for line in body.splitlines()]
    assert [row["id"] for row in rows] == [seeded[1].pk, seeded[2].pk]
    for row in rows:  # each line carries what is needed to recompute its hash
        fields = {key: row[key] for key in ChainFields.__dataclass_fields__ if key != "occurred_at"}
        occurred_at = dt.datetime.fromisoformat(row["occurred_at"])
        assert event_hash(ChainFields(occurred_at=occurred_at, **fields)) == row["hash"]

    everything = [json.loads(line) for line in _export(client, "format=jsonl")[1].splitlines()]
    with schema_context(tenant_a.schema_name):
        exports = list(AuditEvent.objects.filter(action="audit.exported").order_by("id"))
    assert [event.metadata for event in exports] == [
        {"format": "jsonl", "filters": {"action_prefix": "job."}},
        {"format": "jsonl", "filters": {}},
    ]
    ids = [row["id"] for row in everything]  # every event written before the export's own, chained or not
    with schema_context(tenant_a.schema_name):
        assert ids == list(AuditEvent.objects.filter(id__lt=exports[1].pk).order_by("id").values_list("id", flat=True))
    assert exports[0].actor_kind == "api_key" and ids[-1] == exports[0].pk
    assert everything[-1]["sequence"] is None and everything[-1]["hash"] is None  # the first export's: not chained yet
    sequences = [row["sequence"] for row in everything[:-1]]
    assert sequences == list(range(1, len(sequences) + 1))  # the chain as it stood


def test_export_csv_has_a_header_and_defuses_formulas(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    seeded = _seed(two_tenants[0])
    response, body = _export(client, urlencode({"format": "csv", "occurred_after": seeded[0].occurred_at.isoformat()}))
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [row["id"] for row in rows] == [str(event.pk) for event in seeded]
    assert rows[3]["action"] == '\'=HYPERLINK("http://evil")'
    assert json.loads(rows[1]["metadata"]) == {"job": "1"} and rows[1]["hash"] == seeded[1].hash


def test_export_refuses_a_missing_or_unknown_format_and_bad_filters_in_json(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    for query in ("", "?format=xml", "?format=csv&occurred_before=soon"):
        response = client.get(f"/api/v1/audit-events/export{query}")
        assert response.status_code == 400 and response["Content-Type"] == "application/json"
    with schema_context(two_tenants[0].schema_name):
        assert not AuditEvent.objects.filter(action="audit.exported").exists()


def test_one_organization_never_sees_anothers_events(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    tenant_a, tenant_b = two_tenants
    client_a, client_b = api_client_for(tenant_a), api_client_for(tenant_b)
    audit_record(organization=tenant_a, actor=ALICE, action="only.in.a")
    audit_record(organization=tenant_b, actor=ALICE, action="only.in.b")
    with schema_context(tenant_b.schema_name):
        ids_b = set(AuditEvent.objects.values_list("id", flat=True))
    listed_a = client_a.get("/api/v1/audit-events?limit=200").json()["results"]
    assert "only.in.a" in {event["action"] for event in listed_a}
    assert "only.in.b" not in {event["action"] for event in listed_a}
    assert not client_a.get("/api/v1/audit-events?action=only.in.b").json()["results"]
    exported_a = [json.loads(line) for line in _export(client_a, "format=jsonl")[1].splitlines()]
    assert "only.in.b" not in {row["action"] for row in exported_a}
    listed_b = client_b.get("/api/v1/audit-events?limit=200").json()["results"]
    assert {event["id"] for event in listed_b} <= ids_b and "only.in.a" not in {e["action"] for e in listed_b}
    with schema_context(tenant_b.schema_name):
        assert not AuditEvent.objects.filter(action="audit.exported").exists()  # A's export is A's event


def test_views_declare_audit_read(db: None) -> None:
    for path in ("/api/v1/audit-events", "/api/v1/audit-events/export"):
        view = resolve(path, urlconf="cognitionos.urls_api").func.view_class  # type: ignore[attr-defined]
        assert view.required_permissions == {"GET": Permission.AUDIT_READ}


def test_without_a_key_the_audit_log_is_refused(db: None) -> None:
    client = APIClient(HTTP_HOST="localhost")
    assert client.get("/api/v1/audit-events").status_code == 401
    assert client.get("/api/v1/audit-events/export?format=csv").status_code == 401


def test_only_keys_holding_audit_read_may_read_or_export(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    tenant_a = two_tenants[0]
    tenant_connection().set_schema_to_public()
    clients = {}
    for scope in ("jobs:read", "audit:read"):
        issued = apikey_create(organization=tenant_a, name=scope, actor=TEST_ACTOR, scopes=[scope])
        clients[scope] = APIClient(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {issued.key}")
    for path in ("/api/v1/audit-events", "/api/v1/audit-events/export?format=jsonl"):
        refused = clients["jobs:read"].get(path)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
        assert clients["audit:read"].get(path).status_code == 200
    with schema_context(tenant_a.schema_name):  # the refused export was never started, so not recorded
        assert AuditEvent.objects.filter(action="audit.exported").count() == 1


def test_a_members_portal_session_reads_and_exports_by_role(two_tenants: tuple[Organization, Organization]) -> None:
    """The portal's audit page uses these endpoints on the organization's host with the member's session."""
    tenant_a, tenant_b = two_tenants
    billing = member_make(organization=tenant_a, role=Role.BILLING, email="billing@a.example.com")
    viewer = member_make(organization=tenant_a, role=Role.VIEWER, email="viewer@a.example.com")
    tenant_connection().set_schema_to_public()
    browsers = {}
    for user, host in ((billing, tenant_a), (viewer, tenant_a), (billing, tenant_b)):
        browser = Client(HTTP_HOST=f"{host.slug}.localhost")
        browser.force_login(user)
        browsers[user.email, host.slug] = browser
    may = browsers["billing@a.example.com", tenant_a.slug]
    assert may.get("/api/v1/audit-events?action=membership.created").status_code == 200
    exported = may.get("/api/v1/audit-events/export?format=csv")
    assert exported.status_code == 200 and b"membership.created" in b"".join(exported.streaming_content)  # type: ignore[attr-defined]
    for refused in (browsers["viewer@a.example.com", tenant_a.slug], browsers["billing@a.example.com", tenant_b.slug]):
        assert refused.get("/api/v1/audit-events").status_code == 403
        assert refused.get("/api/v1/audit-events/export?format=csv").status_code == 403
    with schema_context(tenant_a.schema_name):
        export = AuditEvent.objects.get(action="audit.exported")
    assert (export.actor_kind, export.actor_label) == ("user", "billing@a.example.com")
