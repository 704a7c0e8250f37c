"""The knowledge REST API (/api/v1/knowledge-bases...) through the real test client and real API
keys: scopes and roles, two organizations, bad input, oversize uploads, idempotent uploads, search.

Requests share the test's transaction, so ingestion (scheduled on commit) never starts here; its
progress through the API is tested in test_api_ingestion.py with a worker."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models.functions import Now
from django.test import Client
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory

from apps.api.errors import ApiError
from apps.api.parsers import BoundedMultiPartParser
from apps.api.permissions import required_permission
from apps.apikeys.services import apikey_create
from apps.knowledge.models import Document, DocumentUpload, KnowledgeBase
from apps.rbac.models import Role
from apps.rbac.permissions import ROLE_PERMISSIONS, permissions_expand, role_permissions
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization
from tests.conftest import ApiClientFor
from tests.factories import TEST_ACTOR, member_make
from tests.knowledge.factories import (
    SIMULATED_MODEL,
    chunk_make,
    document_make,
    embedding_set_make,
    knowledge_base_make,
    near,
    simulated_embedding,
)
from tests.rbac.walk import declared_endpoints

BASES = "/api/v1/knowledge-bases"
BASE = {"name": "Handbook", "description": "How we work", "embedding_model": SIMULATED_MODEL, "dimensions": 256}
TEXT = "# Returns\n\nMoney back within fourteen days of delivery.\n\n## Damage\n\nA damaged parcel gets a refund.\n"


def _error(response: Any, status: int, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    if code is not None:
        assert body["error"]["code"] == code, body
    if param is not None:
        assert body["error"]["param"] == param, body
    return body["error"]  # type: ignore[no-any-return]


def _client(organization: Organization, *scopes: str) -> APIClient:
    tenant_connection().set_schema_to_public()
    issued = apikey_create(organization=organization, name="tests", actor=TEST_ACTOR, scopes=scopes or ("admin",))
    client = APIClient(HTTP_HOST="localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.key}")
    return client


def _upload(
    client: APIClient,
    base_id: str,
    content: bytes = TEXT.encode(),
    name: str = "guide.md",
    key: str | None = None,
    **fields: Any,
) -> Any:
    """A multipart upload of `content` as `name` (with an Idempotency-Key if `key`)."""
    headers: dict[str, Any] = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(
        f"{BASES}/{base_id}/documents",
        {"file": SimpleUploadedFile(name, content, content_type="text/markdown"), **fields},
        format="multipart",
        **headers,
    )


def _base(client: APIClient, **fields: Any) -> dict[str, Any]:
    created = client.post(BASES, {**BASE, **fields}, format="json")
    assert created.status_code == 201, created.content
    return created.json()  # type: ignore[no-any-return]


def test_a_knowledge_base_is_created_listed_read_renamed_and_deleted(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    base = _base(client)
    assert created_fields(base) == {**BASE, "document_count": 0, "chunk_count": 0, "reembedding": None}
    assert base["active_embedding"] == {"embedding_model": SIMULATED_MODEL, "dimensions": 256}
    _error(client.post(BASES, {**BASE, "name": "handbook"}, format="json"), 409)  # names are case-blind
    _error(client.post(BASES, {**BASE, "name": "Other", "dimensions": 300}, format="json"), 400, param="dimensions")
    _error(
        client.post(BASES, {"name": "Tiny", "chunk_tokens": 10}, format="json"), 400, "invalid_request", "chunk_tokens"
    )
    assert [b["name"] for b in client.get(BASES).json()["results"]] == ["Handbook"]
    renamed = client.patch(f"{BASES}/{base['id']}", {"name": "Guide", "description": ""}, format="json")
    assert renamed.status_code == 200, renamed.content
    assert (renamed.json()["name"], renamed.json()["description"]) == ("Guide", "")
    assert client.get(f"{BASES}/{base['id']}").json()["name"] == "Guide"
    assert client.delete(f"{BASES}/{base['id']}").status_code == 204
    _error(client.get(f"{BASES}/{base['id']}"), 404)
    assert client.get(BASES).json()["results"] == []


def test_the_knowledge_base_list_is_cursor_paginated_newest_first_within_its_organization(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    organization_a, organization_b = two_tenants
    client_a, client_b = api_client_for(organization_a), api_client_for(organization_b)
    ids = [_base(client_a, name=name)["id"] for name in ("Alpha", "Beta", "Gamma")]
    base_b = _base(client_b, name="Delta")
    with organization_schema(organization_a):  # one transaction: make the creation order visible
        for age, base_id in enumerate(reversed(ids)):
            KnowledgeBase.objects.filter(pk=base_id).update(created_at=Now() - dt.timedelta(minutes=age))
    first = client_a.get(f"{BASES}?limit=2").json()
    assert [b["id"] for b in first["results"]] == [ids[2], ids[1]]
    assert first["results"][0]["document_count"] == 0 and first["previous"] is None and first["next"]
    second = client_a.get(first["next"]).json()
    assert [b["id"] for b in second["results"]] == [ids[0]]
    assert second["next"] is None and second["previous"]
    assert [b["id"] for b in client_b.get(BASES).json()["results"]] == [base_b["id"]]
    # A's cursor with B's key is only a position in B's list (B's base is newer): none of A's bases.
    assert client_b.get(first["next"]).json()["results"] == []


def test_the_knowledge_base_list_pages_at_most_200(tenant: Organization, api_client_for: ApiClientFor) -> None:
    KnowledgeBase.objects.bulk_create(
        KnowledgeBase(name=f"Base {n:03}", embedding_model=SIMULATED_MODEL, dimensions=256) for n in range(205)
    )
    page = api_client_for(tenant).get(f"{BASES}?limit=1000").json()
    assert len(page["results"]) == 200 and page["next"]


def created_fields(base: dict[str, Any]) -> dict[str, Any]:
    keys = (*BASE, "document_count", "chunk_count", "reembedding")
    return {key: base[key] for key in keys}


def test_the_detail_counts_documents_and_chunks_and_shows_a_reembedding(tenant: Organization) -> None:
    knowledge_base = knowledge_base_make(name="Counted", dimensions=256)
    document = document_make(knowledge_base, title="Policies")
    for ordinal in range(3):
        chunk_make(document, ordinal=ordinal, text=f"chunk {ordinal}")
    document_make(knowledge_base, title="Empty")
    building = embedding_set_make(knowledge_base, dimensions=512, activate=False)
    type(building).objects.filter(pk=building.pk).update(
        status="running", finished_at=None, started_at=building.created_at, heartbeat_at=building.created_at, attempts=1
    )
    client = _client(tenant, "knowledge:read")
    tenant_connection().set_tenant(tenant)
    detail = client.get(f"{BASES}/{knowledge_base.pk}").json()
    assert (detail["document_count"], detail["chunk_count"]) == (2, 3)
    assert detail["active_embedding"] == {"embedding_model": SIMULATED_MODEL, "dimensions": 256}
    reembedding = detail["reembedding"]
    assert (reembedding["status"], reembedding["dimensions"]) == ("running", 512)
    assert (reembedding["embedded_count"], reembedding["chunk_count"], reembedding["error"]) == (0, 3, None)
    listed = client.get(BASES).json()["results"]
    assert [(b["name"], b["document_count"], b["chunk_count"]) for b in listed] == [("Counted", 2, 3)]


def test_a_read_key_reads_and_searches_but_cannot_write(
    two_tenants: tuple[Organization, Organization],
) -> None:
    organization = two_tenants[0]
    writer = _client(organization, "knowledge:write")
    reader = _client(organization, "knowledge:read")
    jobs_only = _client(organization, "jobs:read", "jobs:write")
    base = _base(writer)
    uploaded = _upload(writer, base["id"])
    assert uploaded.status_code == 202, uploaded.content
    document = uploaded.json()
    doc_url = f"{BASES}/{base['id']}/documents/{document['id']}"
    # Reading: allowed with knowledge:read.
    assert reader.get(BASES).status_code == 200
    assert reader.get(f"{BASES}/{base['id']}").status_code == 200
    assert reader.get(f"{BASES}/{base['id']}/documents").status_code == 200
    assert reader.get(doc_url).status_code == 200
    searched = reader.post(f"{BASES}/{base['id']}/search", {"query": "refund", "mode": "text"}, format="json")
    assert searched.status_code == 200, searched.content
    # Writing: refused to it, whatever the endpoint.
    refusals = [
        reader.post(BASES, {**BASE, "name": "Other"}, format="json"),
        reader.patch(f"{BASES}/{base['id']}", {"name": "Renamed"}, format="json"),
        reader.delete(f"{BASES}/{base['id']}"),
        _upload(reader, base["id"]),
        reader.post(f"{BASES}/{base['id']}/documents", {"text": "hi", "filename": "a.txt"}, format="json"),
        reader.post(f"{doc_url}/cancel"),
        reader.post(f"{doc_url}/resume"),
        reader.delete(doc_url),
    ]
    for refused in refusals:
        _error(refused, 403, "permission_denied")
    # Neither, for a key of other scopes.
    _error(jobs_only.get(BASES), 403, "permission_denied")
    _error(jobs_only.post(f"{BASES}/{base['id']}/search", {"query": "refund"}, format="json"), 403)
    with organization_schema(organization):
        assert KnowledgeBase.objects.get(pk=base["id"]).name == "Handbook"
        assert Document.objects.filter(knowledge_base_id=base["id"]).count() == 1
    # The writer may do all of it.
    assert writer.delete(doc_url).status_code == 204
    assert writer.delete(f"{BASES}/{base['id']}").status_code == 204


def test_members_act_as_their_role_allows_through_their_session(tenant: Organization) -> None:
    viewer = member_make(organization=tenant, role=Role.VIEWER)
    developer = member_make(organization=tenant, role=Role.DEVELOPER)
    tenant_connection().set_schema_to_public()

    def session(user: Any) -> Client:
        client = Client(HTTP_HOST=f"{tenant.slug}.localhost")
        client.force_login(user)
        return client

    as_developer, as_viewer = session(developer), session(viewer)
    created = as_developer.post(BASES, json.dumps(BASE), content_type="application/json")
    assert created.status_code == 201, created.content
    base_id = created.json()["id"]
    uploaded = as_developer.post(
        f"{BASES}/{base_id}/documents", {"file": SimpleUploadedFile("a.txt", b"Some text.", content_type="text/plain")}
    )
    assert uploaded.status_code == 202, uploaded.content
    assert as_viewer.get(f"{BASES}/{base_id}/documents").json()["results"][0]["filename"] == "a.txt"
    _error(as_viewer.post(BASES, json.dumps({**BASE, "name": "V"}), content_type="application/json"), 403)
    _error(
        as_viewer.post(
            f"{BASES}/{base_id}/documents", {"file": SimpleUploadedFile("b.txt", b"More.", content_type="text/plain")}
        ),
        403,
        "permission_denied",
    )


@pytest.mark.parametrize("role", sorted(ROLE_PERMISSIONS))
def test_every_knowledge_endpoint_answers_each_role_as_the_matrix_says(tenant: Organization, role: str) -> None:
    endpoints = [endpoint for endpoint in declared_endpoints() if "knowledge-bases" in endpoint.route]
    assert len(endpoints) == 8
    user = member_make(organization=tenant, role=role)
    tenant_connection().set_schema_to_public()
    client = Client(HTTP_HOST=f"{tenant.slug}.localhost")
    client.force_login(user)
    granted = permissions_expand(role_permissions(role))
    wrong = []
    for endpoint in endpoints:
        view = endpoint.view(**endpoint.initkwargs)
        for method in endpoint.methods:
            needed = required_permission(view, method)
            assert needed is not None and needed.value.startswith("knowledge:"), (method, endpoint.route)
            answer = client.generic(method, endpoint.path, "{}", content_type="application/json")
            refused = answer.status_code == 403 and answer.json()["error"]["code"] == "permission_denied"
            # Held: the request is judged on its merits (an unknown id: 404; an empty body: 400).
            if needed in granted and (refused or answer.status_code not in (200, 400, 404)):
                wrong.append(f"{method} {endpoint.route}: {answer.status_code} though {needed} is held")
            if needed not in granted and not refused:
                wrong.append(f"{method} {endpoint.route}: {answer.status_code} though {needed} is not held")
    assert not wrong, "\n".join(wrong)


def test_another_organization_gets_404_on_every_endpoint_and_changes_nothing(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    organization_a, organization_b = two_tenants
    client_a, client_b = api_client_for(organization_a), api_client_for(organization_b)
    base = _base(client_a)
    document = _upload(client_a, base["id"]).json()
    base_url = f"{BASES}/{base['id']}"
    doc_url = f"{base_url}/documents/{document['id']}"
    assert client_b.get(BASES).json()["results"] == []
    answers = {
        "get base": client_b.get(base_url),
        "patch base": client_b.patch(base_url, {"name": "Stolen"}, format="json"),
        "delete base": client_b.delete(base_url),
        "list documents": client_b.get(f"{base_url}/documents"),
        "upload": _upload(client_b, base["id"]),
        "upload text": client_b.post(f"{base_url}/documents", {"text": "x", "filename": "x.txt"}, format="json"),
        "get document": client_b.get(doc_url),
        "delete document": client_b.delete(doc_url),
        "cancel": client_b.post(f"{doc_url}/cancel"),
        "resume": client_b.post(f"{doc_url}/resume"),
        "events": client_b.get(f"{doc_url}/events"),
        "search": client_b.post(f"{base_url}/search", {"query": "refund"}, format="json"),
    }
    for name, answer in answers.items():
        assert answer.status_code == 404, (name, answer.status_code, answer.content[:300])
        assert answer.json()["error"]["type"] == "not_found_error", name
    # B's own base of the same name is B's; A's document id under B's base is unknown too.
    base_b = _base(client_b)
    _error(client_b.get(f"{BASES}/{base_b['id']}/documents/{document['id']}"), 404)
    assert client_b.get(f"{BASES}/{base_b['id']}/documents").json()["results"] == []
    with organization_schema(organization_a):
        assert KnowledgeBase.objects.get(pk=base["id"]).name == "Handbook"
        assert Document.objects.filter(pk=document["id"], status="queued").exists()


def test_a_document_of_one_base_is_not_found_under_another(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    first, second = _base(client), _base(client, name="Second")
    document = _upload(client, first["id"]).json()
    _error(client.get(f"{BASES}/{second['id']}/documents/{document['id']}"), 404)
    _error(client.delete(f"{BASES}/{second['id']}/documents/{document['id']}"), 404)
    assert client.get(f"{BASES}/{first['id']}/documents/{document['id']}").status_code == 200


def test_an_upload_is_queued_with_its_fields_and_listed_newest_first_with_filters(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    base = _base(client)
    first = _upload(client, base["id"], title="The guide", metadata=json.dumps({"team": "support", "year": 2026}))
    assert first.status_code == 202, first.content
    document = first.json()
    assert first["Location"] == f"{BASES}/{base['id']}/documents/{document['id']}"
    assert {key: document[key] for key in ("title", "filename", "size_bytes", "metadata", "knowledge_base")} == {
        "title": "The guide",
        "filename": "guide.md",
        "size_bytes": len(TEXT.encode()),
        "metadata": {"team": "support", "year": 2026},
        "knowledge_base": base["id"],
    }
    assert (document["status"], document["stage"], document["chunk_count"], document["embedded_count"]) == (
        "queued",
        "uploaded",
        0,
        0,
    )
    assert document["error"] is None and document["content_type"] == "text/markdown"
    # A program without multipart sends the text as JSON.
    second = client.post(
        f"{BASES}/{base['id']}/documents", {"text": "Plain words.", "filename": "notes.txt"}, format="json"
    )
    assert second.status_code == 202, second.content
    assert (second.json()["title"], second.json()["content_type"]) == ("notes", "text/plain")
    listed = client.get(f"{BASES}/{base['id']}/documents?limit=1")
    page = listed.json()
    assert [d["id"] for d in page["results"]] == [second.json()["id"]] and page["next"]
    following = client.get(page["next"]).json()
    assert [d["id"] for d in following["results"]] == [document["id"]]
    with organization_schema(two_tenants[0]):
        Document.objects.filter(pk=document["id"]).update(
            status="failed",
            finished_at=Document.objects.get(pk=document["id"]).created_at,
            error_class="unreadable",
            error_message="broken",
        )
    failed = client.get(f"{BASES}/{base['id']}/documents?status=failed").json()["results"]
    assert [d["id"] for d in failed] == [document["id"]]
    assert failed[0]["error"] == {"class": "unreadable", "message": "broken"}
    both = client.get(f"{BASES}/{base['id']}/documents?status=failed&status=queued").json()["results"]
    assert len(both) == 2
    _error(client.get(f"{BASES}/{base['id']}/documents?status=lost"), 400, param="status")


@pytest.mark.parametrize(
    ("content", "name", "fields", "param"),
    [
        (b"", "empty.txt", {}, "file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "picture.png", {}, "file"),
        (b"MZ\x90\x00" + bytes(range(256)), "tool.exe", {}, "file"),
        (b"\xff\xfe\x00\x00 not utf-8 \xc3\x28", "latin.txt", {}, "file"),
        (TEXT.encode(), "guide.md", {"metadata": "{not json"}, "metadata"),
        (TEXT.encode(), "guide.md", {"metadata": "[1, 2]"}, "metadata"),
        (TEXT.encode(), "guide.md", {"metadata": json.dumps({"Bad Key": 1})}, "metadata"),
        (TEXT.encode(), "guide.md", {"metadata": json.dumps({"nested": {"a": 1}})}, "metadata"),
        (TEXT.encode(), "guide.md", {"metadata": '{"n": NaN}'}, "metadata"),
        (TEXT.encode(), "guide.md", {"title": "t" * 301}, "title"),
    ],
)
def test_an_unusable_upload_is_a_400_naming_the_field(
    tenant: Organization, content: bytes, name: str, fields: dict[str, str], param: str
) -> None:
    client = _client(tenant, "knowledge:write")
    base = _base(client)
    _error(_upload(client, base["id"], content=content, name=name, **fields), 400, param=param)
    with organization_schema(tenant):
        assert not Document.objects.exists() and not DocumentUpload.objects.exists()


def test_malformed_upload_bodies_are_400s(tenant: Organization) -> None:
    client = _client(tenant, "knowledge:write")
    base = _base(client)
    url = f"{BASES}/{base['id']}/documents"
    _error(client.post(url, {"title": "no file"}, format="multipart"), 400, param="file")
    _error(client.post(url, {"filename": "a.txt"}, format="json"), 400, param="text")
    _error(client.post(url, {"text": "words"}, format="json"), 400, param="filename")
    _error(client.post(url, {"text": "", "filename": "a.txt"}, format="json"), 400, param="text")
    _error(client.post(url, {"text": "a\x00b", "filename": "a.txt"}, format="json"), 400, param="text")
    _error(client.post(url, {"text": "x", "filename": "a.txt", "metadata": [1]}, format="json"), 400, param="metadata")
    _error(client.post(url, {"text": "x", "filename": "../../"}, format="json"), 400, param="file")
    broken = client.generic(
        "POST",
        url,
        '--b\r\nContent-Disposition: form-data; name="file"',
        content_type="multipart/form-data; boundary=b",
    )
    assert broken.status_code == 400, broken.content
    no_boundary = client.generic("POST", url, "xx", content_type="multipart/form-data")
    assert no_boundary.status_code == 400, no_boundary.content
    _error(client.generic("POST", url, "a=b", content_type="application/x-www-form-urlencoded"), 415)
    with organization_schema(tenant):
        assert not Document.objects.exists()


def test_an_upload_over_the_plans_size_is_a_413_before_it_is_read(
    tenant: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("apps.knowledge.services.MAX_DOCUMENT_BYTES", 10_000)
    client = _client(tenant, "knowledge:write")
    base = _base(client)
    url = f"{BASES}/{base['id']}/documents"
    error = _error(_upload(client, base["id"], content=b"a" * 10_001, name="big.txt"), 413, "request_too_large")
    assert "10000" in error["message"]
    assert _upload(client, base["id"], content=b"a " * 5_000, name="fits.txt").status_code == 202
    # Announced larger than the limit allows: refused by its Content-Length, unread.
    announced = client.generic(
        "POST", url, "--b--\r\n", content_type="multipart/form-data; boundary=b", CONTENT_LENGTH="500000000"
    )
    _error(announced, 413, "request_too_large")
    # Text sent as JSON is held to the plan's limit by the service.
    _error(client.post(url, {"text": "a" * 10_001, "filename": "big.txt"}, format="json"), 413)
    with organization_schema(tenant):
        assert list(Document.objects.values_list("filename", flat=True)) == ["fits.txt"]


class _CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.taken = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.taken += len(chunk)
        return chunk


def test_the_multipart_parser_stops_reading_at_the_limit_whatever_the_length_says(tenant: Organization) -> None:
    limit = 100_000
    file = b"x" * 5_000_000
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n" + file + b"\r\n--b--\r\n"
    )
    raw = APIRequestFactory().generic("POST", "/", "", content_type="multipart/form-data; boundary=b")
    raw.META["CONTENT_LENGTH"] = "1000"  # a lie: small enough to pass the first check
    stream = _CountingStream(body)

    class View:
        def upload_max_bytes(self, request: Request) -> int:
            return limit

    parser = BoundedMultiPartParser()
    with pytest.raises(ApiError) as refused:
        parser.parse(stream, "multipart/form-data; boundary=b", {"request": raw, "view": View()})
    assert refused.value.status_code == 413
    # Django's parser reads in 64 KiB chunks: at most one chunk (and a boundary's look-ahead) past it.
    assert stream.taken < limit + 3 * 64 * 1024
    # Within the limit, the file comes through whole.
    small = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhello\r\n--b--\r\n'
    parsed = parser.parse(io.BytesIO(small), "multipart/form-data; boundary=b", {"request": raw, "view": View()})
    assert parsed.files["file"].read() == b"hello"


def test_a_retried_upload_with_its_idempotency_key_creates_one_document(tenant: Organization) -> None:
    client = _client(tenant, "knowledge:write")
    base = _base(client)
    first = _upload(client, base["id"], key="upload-1")
    again = _upload(client, base["id"], key="upload-1")
    assert first.status_code == again.status_code == 202, (first.content, again.content)
    assert again["Idempotent-Replayed"] == "true" and again.json()["id"] == first.json()["id"]
    other_file = _upload(client, base["id"], content=b"Other words.", key="upload-1")
    _error(other_file, 422, "idempotency_key_reused")
    created = client.post(BASES, {**BASE, "name": "Once"}, format="json", HTTP_IDEMPOTENCY_KEY="base-1")
    replayed = client.post(BASES, {**BASE, "name": "Once"}, format="json", HTTP_IDEMPOTENCY_KEY="base-1")
    assert created.json()["id"] == replayed.json()["id"] and replayed["Idempotent-Replayed"] == "true"
    with organization_schema(tenant):
        assert Document.objects.count() == 1
        assert KnowledgeBase.objects.filter(name="Once").count() == 1


def test_search_answers_hits_with_scores_positions_headings_and_matches(tenant: Organization) -> None:
    knowledge_base = knowledge_base_make(name="Searched", dimensions=256)
    query = "refund policy"
    document = document_make(knowledge_base, title="Policies", metadata={"team": "support"})
    vector = simulated_embedding(query, 256)
    chunk_make(
        document,
        ordinal=0,
        text="Our refund policy: money back.",
        heading_path="Returns",
        vector=near(vector, similarity=0.9, seed=1),
    )
    chunk_make(
        document,
        ordinal=1,
        text="Offices close at six.",
        heading_path="Contact",
        vector=near(vector, similarity=0.1, seed=2),
    )
    client = _client(tenant, "knowledge:read")
    url = f"{BASES}/{knowledge_base.pk}/search"
    answer = client.post(url, {"query": query, "top_k": 1, "mode": "hybrid"}, format="json")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert (body["query"], body["mode"], body["model"], body["knowledge_base"]) == (
        query,
        "hybrid",
        SIMULATED_MODEL,
        str(knowledge_base.pk),
    )
    assert float(body["cost_usd"]) > 0 and answer["x-cognitionos-request-id"]
    [hit] = body["hits"]
    assert (hit["document_id"], hit["document_title"], hit["position"], hit["heading_path"]) == (
        str(document.pk),
        "Policies",
        0,
        "Returns",
    )
    assert hit["vector_score"] == pytest.approx(0.9, abs=1e-3) and hit["score"] > 0
    assert [hit["text"][start:end].lower() for start, end in hit["matches"]] == ["refund", "policy"]
    filtered = client.post(url, {"query": query, "filters": {"team": "sales"}}, format="json")
    assert filtered.status_code == 200 and filtered.json()["hits"] == []
    _error(client.post(url, {"query": ""}, format="json"), 400, param="query")
    _error(client.post(url, {"query": "x" * 2001}, format="json"), 400, param="query")
    _error(client.post(url, {"query": "x", "top_k": 0}, format="json"), 400, param="top_k")
    _error(client.post(url, {"query": "x", "top_k": 51}, format="json"), 400, param="top_k")
    _error(client.post(url, {"query": "x", "mode": "fuzzy"}, format="json"), 400, param="mode")
    _error(client.post(url, {"query": "x", "filters": ["team"]}, format="json"), 400, param="filters")
    _error(client.post(url, {"query": "x", "filters": {"Bad Key": 1}}, format="json"), 400)
    _error(client.post(url, {"query": "x", "filters": {"team": {"a": 1}}}, format="json"), 400)
    _error(client.post(url, {"query": "x", "filters": {f"k{i}": i for i in range(11)}}, format="json"), 400)
    _error(client.post(url, "[", content_type="application/json"), 400, "invalid_json")


def test_cancel_and_resume_answer_409_when_the_document_is_not_in_that_state(tenant: Organization) -> None:
    client = _client(tenant, "knowledge:read", "knowledge:write")
    base = _base(client)
    document = _upload(client, base["id"]).json()
    doc_url = f"{BASES}/{base['id']}/documents/{document['id']}"
    _error(client.post(f"{doc_url}/resume"), 409)
    cancelled = client.post(f"{doc_url}/cancel")
    assert cancelled.status_code == 200, cancelled.content
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["error"]["class"] == "cancelled"
    _error(client.post(f"{doc_url}/cancel"), 409)
    resumed = client.post(f"{doc_url}/resume")
    assert resumed.status_code == 202, resumed.content
    assert resumed.json()["status"] == "queued" and resumed.json()["error"] is None
    assert client.delete(doc_url).status_code == 204
    _error(client.get(doc_url), 404)
    _error(client.delete(doc_url), 404)


def test_a_search_over_the_budget_is_a_402_and_text_search_spends_nothing(tenant: Organization) -> None:
    knowledge_base = knowledge_base_make(name="Budgeted", dimensions=256)
    chunk_make(document_make(knowledge_base), ordinal=0, text="Refunds take five days.", vector=[1.0] + [0.0] * 255)
    client = _client(tenant, "knowledge:read", "budgets:manage")
    budget = {"scope": "organization", "period": "day", "limit_usd": "0", "hard": True}
    assert client.post("/api/v1/budgets", budget, format="json").status_code == 201
    url = f"{BASES}/{knowledge_base.pk}/search"
    refused = _error(client.post(url, {"query": "refunds", "mode": "hybrid"}, format="json"), 402, "budget_exceeded")
    assert refused["type"] == "insufficient_quota"
    words = client.post(url, {"query": "refunds", "mode": "text"}, format="json")
    assert words.status_code == 200, words.content
    assert words.json()["model"] is None and float(words.json()["cost_usd"]) == 0
    assert [hit["text"] for hit in words.json()["hits"]] == ["Refunds take five days."]
