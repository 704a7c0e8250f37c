"""Data export (GDPR): an organization's whole data as JSON lines per table in a zip, built as durable
work, checked against its manifest and checksums, and downloadable once by a signed, expiring link."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client, override_settings
from django_tenants.utils import schema_context
from rest_framework.test import APIClient

from apps.accounts.principals import Principal
from apps.apikeys.services import apikey_create
from apps.audit.exports import EXPORT, ExportRefused, export_sources, organization_export_start
from apps.audit.models import AuditEvent, DataExport, DataExportPart
from apps.audit.services import audit_record
from apps.rbac.models import Role
from apps.rbac.permissions import Permission
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.work.models import WorkStatus
from apps.work.services import work_execute
from tests.conftest import ApiClientFor
from tests.factories import TEST_ACTOR, member_make

ADMIN = Principal(kind="user", id="1", label="admin@example.com", permissions=frozenset({"admin"}))


def _seed(organization: Organization, marker: str) -> None:
    """Rows that name the organization: an audit event in its schema, a member in the public one."""
    member_make(organization=organization, role=Role.ADMIN, email=f"{marker}@people.example.com")
    with schema_context(organization.schema_name):
        audit_record(organization=organization, actor=ADMIN, action="marker.seeded", metadata={"marker": marker})


def _build(organization: Organization, actor: Principal = ADMIN) -> DataExport:
    export = organization_export_start(organization=organization, actor=actor)
    with schema_context(organization.schema_name):
        work_execute(organization=organization, kind=EXPORT, item_id=export.pk)
        export.refresh_from_db()
    tenant_connection().set_schema_to_public()
    return export


def _zip_of(organization: Organization, export: DataExport) -> bytes:
    with schema_context(organization.schema_name):
        parts = DataExportPart.objects.filter(export=export).order_by("number").values_list("data", flat=True)
        return b"".join(bytes(part) for part in parts)


def _lines(archive: zipfile.ZipFile, path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in archive.read(path).decode().splitlines()]


def test_export_holds_the_organizations_rows_and_not_the_others(two_tenants: tuple[Organization, Organization]) -> None:
    a, b = two_tenants
    _seed(a, "alpha-marker")
    _seed(b, "bravo-marker")
    apikey_create(organization=a, name="ci", actor=TEST_ACTOR)
    export = _build(a)
    assert export.status == WorkStatus.SUCCEEDED, (export.error_class, export.error_message)
    data = _zip_of(a, export)
    assert len(data) == export.size_bytes
    assert hashlib.sha256(data).hexdigest() == export.sha256
    archive = zipfile.ZipFile(io.BytesIO(data))
    everything = b"".join(archive.read(name) for name in archive.namelist())
    assert b"alpha-marker" in everything
    assert b"bravo-marker" not in everything
    assert b.slug.encode() not in everything

    # Every table of the schema is there, its own export bytes aside; the public rows are A's only.
    manifest = json.loads(archive.read("manifest.json"))
    paths = {entry["path"] for entry in manifest["files"]}
    assert "tenant/audit_auditevent.jsonl" in paths
    assert "tenant/django_migrations.jsonl" in paths
    assert "tenant/audit_dataexportpart.jsonl" not in paths
    for table in ("tenants_organization", "tenants_domain", "rbac_membership", "apikeys_apikey"):
        assert f"public/{table}.jsonl" in paths
    assert [row["id"] for row in _lines(archive, "public/tenants_organization.jsonl")] == [a.pk]
    emails = {row["user_email"] for row in _lines(archive, "public/rbac_membership.jsonl")}
    assert "alpha-marker@people.example.com" in emails
    assert all(row["organization_id"] == a.pk for row in _lines(archive, "public/rbac_membership.jsonl"))
    # API keys: metadata, never the hash.
    keys = _lines(archive, "public/apikeys_apikey.jsonl")
    assert keys and all("secret_hash" not in row and row["name"] for row in keys)
    key_entry = next(entry for entry in manifest["files"] if entry["path"] == "public/apikeys_apikey.jsonl")
    assert key_entry["omitted_columns"] == ["secret_hash"]
    events = _lines(archive, "tenant/audit_auditevent.jsonl")
    with schema_context(a.schema_name):
        # Every event written before the export finished (its completion is recorded after).
        assert len(events) == AuditEvent.objects.exclude(action="data_export.completed").count()
    assert manifest["organization"] == {
        "id": a.pk,
        "slug": a.slug,
        "name": a.name,
        "schema": a.schema_name,
        "plan": a.plan.code,
    }
    assert "audit.0004_data_export" in manifest["schema_migration_state"]["applied"]
    assert manifest["created_at"]


def test_checksums_and_counts_verify(two_tenants: tuple[Organization, Organization]) -> None:
    a, _ = two_tenants
    _seed(a, "sums")
    with override_settings(DATA_EXPORT_BATCH_ROWS=2):  # many round trips per table
        export = _build(a)
    archive = zipfile.ZipFile(io.BytesIO(_zip_of(a, export)))
    manifest_bytes = archive.read("manifest.json")
    manifest = json.loads(manifest_bytes)
    sums: dict[str, str] = {}
    for line in archive.read("SHA256SUMS").decode().splitlines():
        digest, path = line.split("  ", 1)
        sums[path] = digest
    assert set(sums) == {entry["path"] for entry in manifest["files"]} | {"manifest.json"}
    assert sums["manifest.json"] == hashlib.sha256(manifest_bytes).hexdigest()
    for entry in manifest["files"]:
        content = archive.read(entry["path"])
        assert hashlib.sha256(content).hexdigest() == entry["sha256"] == sums[entry["path"]]
        assert len(content) == entry["bytes"]
        assert len(content.splitlines()) == entry["rows"]
    assert export.rows_done == sum(entry["rows"] for entry in manifest["files"])
    assert export.tables_done == export.tables_total == len(manifest["files"])


def test_secret_columns_are_left_out_everywhere(two_tenants: tuple[Organization, Organization]) -> None:
    a, _ = two_tenants
    omitted = {column for source in export_sources(a) for column in source.omitted}
    assert "secret_hash" in omitted  # API keys
    assert not any(column.endswith("tokens") for column in omitted)  # token counts are data, not secrets


def test_a_second_export_waits_for_the_first(two_tenants: tuple[Organization, Organization]) -> None:
    a, _ = two_tenants
    organization_export_start(organization=a, actor=ADMIN)
    with pytest.raises(ExportRefused) as refused:
        organization_export_start(organization=a, actor=ADMIN)
    assert refused.value.code == "export_in_progress"


def test_export_past_the_size_limit_fails_with_a_clear_error(two_tenants: tuple[Organization, Organization]) -> None:
    a, _ = two_tenants
    with override_settings(DATA_EXPORT_MAX_BYTES=2000):
        export = _build(a)
    assert export.status == WorkStatus.FAILED
    assert export.error_class == "export_too_large"
    assert "2,000 bytes" in export.error_message
    with schema_context(a.schema_name):
        assert not DataExportPart.objects.filter(export=export).exists()
        assert AuditEvent.objects.filter(action="data_export.failed", target_id=str(export.pk)).exists()


# -- the API --------------------------------------------------------------------------------------


def _download_path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def _built_via_api(client: APIClient, organization: Organization) -> dict[str, Any]:
    started = client.post("/api/v1/exports")
    assert started.status_code == 202, started.content
    body = started.json()
    assert body["status"] == "queued" and body["download_url"] is None
    with schema_context(organization.schema_name):
        work_execute(organization=organization, kind=EXPORT, item_id=body["id"])
    tenant_connection().set_schema_to_public()
    detail = client.get(f"/api/v1/exports/{body['id']}")
    assert detail.status_code == 200
    result: dict[str, Any] = detail.json()
    return result


def test_api_export_downloads_once(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    a, _ = two_tenants
    client = api_client_for(a)
    detail = _built_via_api(client, a)
    assert detail["status"] == "succeeded" and detail["progress"] == 1.0
    assert detail["tables_done"] == detail["tables_total"] > 10
    path = _download_path(detail["download_url"])

    first = client.get(path)
    assert first.status_code == 200, first.content
    body = b"".join(first.streaming_content)  # type: ignore[attr-defined]
    assert hashlib.sha256(body).hexdigest() == detail["sha256"] == first["X-Content-SHA256"]
    assert zipfile.ZipFile(io.BytesIO(body)).testzip() is None

    second = client.get(path)
    assert second.status_code == 410
    assert second.json()["error"]["code"] == "export_gone"
    assert client.get(f"/api/v1/exports/{detail['id']}").json()["download_url"] is None
    with schema_context(a.schema_name):
        assert not DataExportPart.objects.filter(export_id=detail["id"]).exists()  # deleted once sent
        actions = list(AuditEvent.objects.filter(target_id=detail["id"]).values_list("action", flat=True))
    assert sorted(actions) == ["data_export.completed", "data_export.downloaded", "data_export.started"]


def test_link_of_another_organization_is_not_found(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    a, b = two_tenants
    detail = _built_via_api(api_client_for(a), a)
    other = api_client_for(b)
    response = other.get(_download_path(detail["download_url"]))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert other.get(f"/api/v1/exports/{detail['id']}").status_code == 404
    # A forged token is as unknown.
    assert api_client_for(a).get(f"/api/v1/exports/{detail['id']}/download?token=forged").status_code == 404


def test_link_expires(two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor) -> None:
    a, _ = two_tenants
    client = api_client_for(a)
    detail = _built_via_api(client, a)
    with override_settings(DATA_EXPORT_LINK_SECONDS=0):
        response = client.get(_download_path(detail["download_url"]))
    assert response.status_code == 410
    assert "expired" in response.json()["error"]["message"]


def test_export_needs_the_admin_permission(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    a, _ = two_tenants
    tenant_connection().set_schema_to_public()
    issued = apikey_create(
        organization=a, name="dev", actor=TEST_ACTOR, scopes=[Permission.JOBS_READ.value, Permission.AUDIT_READ.value]
    )
    client = APIClient(HTTP_HOST="localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.key}")
    response = client.post("/api/v1/exports")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    with pytest.raises(ExportRefused):
        organization_export_start(
            organization=a, actor=Principal(kind="user", id="2", label="dev", permissions=frozenset())
        )


# -- the portal -----------------------------------------------------------------------------------


def test_portal_page_starts_an_export_and_offers_its_download_once(
    two_tenants: tuple[Organization, Organization],
) -> None:
    a, _ = two_tenants
    admin = member_make(organization=a, role=Role.ADMIN)
    developer = member_make(organization=a, role=Role.DEVELOPER)
    client = Client(HTTP_HOST=f"{a.slug}.localhost")
    client.force_login(admin)
    page = client.get("/settings/data-export/")
    assert page.status_code == 200
    assert "Export all data</button>" in page.content.decode()
    assert client.post("/settings/data-export/").status_code == 302
    with schema_context(a.schema_name):
        export = DataExport.objects.get()
        work_execute(organization=a, kind=EXPORT, item_id=export.pk)
    tenant_connection().set_schema_to_public()
    html = client.get("/settings/data-export/").content.decode()
    link = re.search(r'href="(/api/v1/exports/[^"]+)"', html)
    assert link is not None and "Download (once)" in html
    download = client.get(link.group(1).replace("&amp;", "&"))
    assert download.status_code == 200
    assert hashlib.sha256(b"".join(download.streaming_content)).hexdigest() == download["X-Content-SHA256"]  # type: ignore[attr-defined]
    assert "Downloaded" in client.get("/settings/data-export/").content.decode()

    other = Client(HTTP_HOST=f"{a.slug}.localhost")
    other.force_login(developer)
    assert other.get("/settings/data-export/").status_code == 403
    assert "Data export" not in other.get("/").content.decode()
