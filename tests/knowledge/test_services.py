"""Knowledge bases and documents: the writes (validation, audit, refusals, two tenants)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from apps.accounts.principals import Principal
from apps.audit.models import AuditEvent
from apps.billing.selectors import EntitlementRefused, entitlement_cache_forget
from apps.knowledge.models import Chunk, ChunkEmbedding, Document, DocumentUpload, EmbeddingSet, KnowledgeBase
from apps.knowledge.selectors import (
    KnowledgeNotFound,
    document_get,
    document_progress,
    knowledge_base_get,
    knowledge_bases_list,
)
from apps.knowledge.services import (
    KnowledgeConflict,
    KnowledgeInvalid,
    KnowledgeTooLarge,
    document_cancel,
    document_delete,
    document_resume,
    document_upload,
    knowledge_base_create,
    knowledge_base_delete,
    knowledge_base_update,
)
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from tests.factories import plan_make

ACTOR = Principal(kind="user", id="7", label="ada@example.com")


def _base(organization: Organization, name: str = "Handbook", **fields: object) -> KnowledgeBase:
    return knowledge_base_create(organization=organization, principal=ACTOR, name=name, **fields)  # type: ignore[arg-type]


def _upload(organization: Organization, base: KnowledgeBase, **fields: object) -> Document:
    values: dict[str, object] = {
        "filename": "guide.md",
        "content_type": "text/markdown",
        "content": b"# Guide\n\nHello there.\n",
        **fields,
    }
    return document_upload(organization=organization, principal=ACTOR, knowledge_base=base, **values)  # type: ignore[arg-type]


def test_a_new_knowledge_base_has_an_active_empty_set_of_its_model(tenant: Organization) -> None:
    base = _base(tenant, embedding_model="simulated-embedding", dimensions=384)
    assert (base.embedding_model, base.dimensions) == ("simulated-embedding", 384)
    active = base.active_set
    assert active is not None
    assert (active.status, active.embedding_model, active.dimensions) == (
        "succeeded",
        "simulated-embedding",
        384,
    )
    assert active.activated_at is not None
    event = AuditEvent.objects.get(action="knowledge_base.created")
    assert event.target_id == str(base.pk) and event.actor_label == ACTOR.label
    assert event.metadata["dimensions"] == 384


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"name": "  "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"description": "d" * 501}, "description"),
        ({"embedding_model": "simulated-mini"}, "embedding_model"),  # a chat model
        ({"embedding_model": "no-such-model"}, "embedding_model"),
        ({"dimensions": 1000}, "dimensions"),
        ({"dimensions": 3072}, "dimensions"),  # above pgvector's HNSW limit: not a supported count
        ({"chunk_tokens": 10}, "chunk_tokens"),
        ({"chunk_tokens": 5000}, "chunk_tokens"),
        ({"chunk_tokens": 200, "chunk_overlap_tokens": 101}, "chunk_overlap_tokens"),
    ],
)
def test_invalid_knowledge_bases_are_refused_naming_the_field(
    tenant: Organization, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(KnowledgeInvalid) as refused:
        _base(tenant, **{"name": "Valid", **fields})
    assert refused.value.param == param and refused.value.http_status == 400
    assert not KnowledgeBase.objects.exists() and not AuditEvent.objects.filter(action__startswith="knowledge").exists()


def test_text_embedding_3_large_is_reduced_to_a_supported_count(tenant: Organization) -> None:
    base = _base(tenant, embedding_model="text-embedding-3-large")
    assert base.dimensions == 1536  # 3,072 natively; asked for with `dimensions`
    assert _base(tenant, "Small", embedding_model="text-embedding-3-large", dimensions=256).dimensions == 256


def test_names_are_unique_without_regard_to_case(tenant: Organization) -> None:
    _base(tenant, "Handbook")
    with pytest.raises(KnowledgeConflict) as refused:
        _base(tenant, "  handbook ")
    assert refused.value.http_status == 409 and refused.value.code == "name_taken"


def test_upload_queues_a_document_with_its_bytes_and_audits_it(tenant: Organization) -> None:
    base = _base(tenant)
    document = _upload(tenant, base, metadata={"team": "ops", "year": 2026, "public": True})
    assert (document.status, document.stage, document.content_type) == ("queued", "uploaded", "text/markdown")
    assert document.title == "guide" and document.size_bytes == 22 and len(document.sha256) == 64
    document.refresh_from_db()
    assert document.admitted_at is not None  # the plan's cap admitted it: sent to the workers on commit
    assert bytes(DocumentUpload.objects.get(document=document).content).startswith(b"# Guide")
    event = AuditEvent.objects.get(action="knowledge_document.uploaded")
    assert event.metadata["filename"] == "guide.md" and event.metadata["knowledge_base"] == str(base.pk)
    assert document_progress(document)["stage"] == "uploaded"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"content": b""}, "document_empty"),
        ({"content": b"  \n\t "}, "document_empty"),
        ({"filename": "sheet.xlsx", "content": b"PK\x03\x04 zipped"}, "unsupported_type"),
        ({"filename": "setup.exe", "content": b"MZ\x90\x00"}, "unsupported_type"),
        ({"filename": "notes", "content_type": "application/octet-stream", "content": b"hi"}, "unsupported_type"),
        ({"filename": "garbage.txt", "content": bytes(range(256)) * 4}, "not_utf8_text"),
        ({"filename": "latin1.txt", "content": "café crème".encode("latin-1")}, "not_utf8_text"),
        ({"filename": "nul.txt", "content": b"\x00\x01\x02\x03" * 100}, "not_utf8_text"),
        ({"filename": "fake.pdf", "content": b"just text named pdf"}, "broken_pdf"),
    ],
)
def test_unreadable_uploads_are_refused_with_a_400_and_nothing_stored(
    tenant: Organization, fields: dict[str, object], code: str
) -> None:
    base = _base(tenant)
    with pytest.raises(KnowledgeInvalid) as refused:
        _upload(tenant, base, **fields)
    assert (refused.value.code, refused.value.http_status, refused.value.param) == (code, 400, "file")
    assert not Document.objects.exists()


def test_the_client_content_type_is_not_trusted(tenant: Organization) -> None:
    base = _base(tenant)
    # Declared HTML, named .md: Markdown (the extension); a PDF named .txt: a PDF (the bytes).
    assert _upload(tenant, base, content_type="text/html").content_type == "text/markdown"
    pdf = _upload(tenant, base, filename="x.txt", content_type="text/plain", content=b"%PDF-1.4\n...")
    assert pdf.content_type == "application/pdf"
    # No extension: the declared type decides among text types only.
    assert _upload(tenant, base, filename="README", content_type="text/plain").content_type == "text/plain"


def _on_plan(organization: Organization, code: str, **values: Any) -> None:
    """The organization on a plan of its own (in the test's transaction, rolled back after it)."""
    organization.plan = plan_make(code=code, **values)
    organization.save(update_fields=["plan"])
    organization_cache_forget()
    entitlement_cache_forget(organization)


def test_a_file_over_the_plans_size_is_refused_with_a_413(tenant: Organization) -> None:
    _on_plan(tenant, "tiny-docs", max_document_bytes=1000)
    base = _base(tenant)
    _upload(tenant, base, content=b"a" * 1000)
    with pytest.raises(KnowledgeTooLarge) as refused:
        _upload(tenant, base, content=b"a" * 1001)
    assert refused.value.http_status == 413 and refused.value.details == {"limit_bytes": 1000, "size_bytes": 1001}
    entitlement_cache_forget(tenant)


def test_an_organization_at_its_chunk_limit_is_refused_uploads(tenant: Organization) -> None:
    _on_plan(tenant, "few-chunks", max_knowledge_chunks=1)
    base = _base(tenant)
    first = _upload(tenant, base)
    Chunk.objects.create(document=first, knowledge_base=base, ordinal=0, text="x", token_estimate=1)
    with pytest.raises(EntitlementRefused) as refused:
        _upload(tenant, base)
    assert refused.value.details == {
        "entitlement": "knowledge_chunks",
        "plan": "Few-Chunks",
        "limit": 1,
        "used": 1,
        "remaining": 0,
    }
    entitlement_cache_forget(tenant)


@pytest.mark.parametrize(
    "metadata",
    [
        {"Bad Key": "x"},
        {"k": {"nested": 1}},
        {"k": None},
        {"k": "v" * 201},
        {f"k{n}": n for n in range(21)},
        {"k": float("nan")},
    ],
)
def test_metadata_is_flat_and_bounded(tenant: Organization, metadata: dict[str, object]) -> None:
    base = _base(tenant)
    with pytest.raises(KnowledgeInvalid) as refused:
        _upload(tenant, base, metadata=metadata)
    assert refused.value.param == "metadata"


def test_cancel_then_resume_and_the_states_that_refuse_them(tenant: Organization) -> None:
    base = _base(tenant)
    document = _upload(tenant, base)
    cancelled = document_cancel(organization=tenant, principal=ACTOR, document=document)
    assert cancelled.status == "cancelled" and cancelled.error_class == "cancelled"
    with pytest.raises(KnowledgeConflict):
        document_cancel(organization=tenant, principal=ACTOR, document=cancelled)
    resumed = document_resume(organization=tenant, principal=ACTOR, document=cancelled)
    assert (resumed.status, resumed.attempts, resumed.finished_at, resumed.error_class) == ("queued", 0, None, "")
    with pytest.raises(KnowledgeConflict) as refused:
        document_resume(organization=tenant, principal=ACTOR, document=resumed)
    assert refused.value.code == "document_not_stopped"
    Document.objects.filter(pk=document.pk).update(
        status="failed", error_class="encrypted_pdf", error_message="encrypted", finished_at="2026-01-01T00:00Z"
    )
    with pytest.raises(KnowledgeConflict) as refused:
        document_resume(organization=tenant, principal=ACTOR, document=document)
    assert refused.value.code == "document_unreadable"
    actions = list(AuditEvent.objects.filter(target_id=str(document.pk)).values_list("action", flat=True))
    assert actions.count("knowledge_document.cancelled") == 1 and actions.count("knowledge_document.resumed") == 1


def _indexed_document(organization: Organization, base: KnowledgeBase) -> Document:
    document = _upload(organization, base)
    active = base.active_set
    assert active is not None
    chunks = [
        Chunk.objects.create(document=document, knowledge_base=base, ordinal=n, text=f"t{n}", token_estimate=1)
        for n in range(3)
    ]
    for chunk in chunks:
        ChunkEmbedding.objects.create(
            embedding_set=active,
            chunk=chunk,
            dimensions=base.dimensions,
            embedding=[0.1] * base.dimensions,
        )
    return document


def test_deleting_a_document_removes_its_chunks_and_vectors_only(tenant: Organization) -> None:
    base = _base(tenant, dimensions=256)
    gone, kept = _indexed_document(tenant, base), _indexed_document(tenant, base)
    document_delete(organization=tenant, principal=ACTOR, document=gone)
    assert not Document.objects.filter(pk=gone.pk).exists()
    assert Chunk.objects.filter(document=gone).count() == 0 and Chunk.objects.filter(document=kept).count() == 3
    assert ChunkEmbedding.objects.count() == 3
    event = AuditEvent.objects.get(action="knowledge_document.deleted")
    assert event.target_id == str(gone.pk) and event.metadata["knowledge_base"] == str(base.pk)


def test_deleting_a_knowledge_base_removes_everything_in_it(tenant: Organization) -> None:
    base, other = _base(tenant, dimensions=256), _base(tenant, "Other", dimensions=256)
    _indexed_document(tenant, base)
    _indexed_document(tenant, other)
    knowledge_base_delete(organization=tenant, principal=ACTOR, knowledge_base=base)
    assert list(KnowledgeBase.objects.values_list("name", flat=True)) == ["Other"]
    assert Document.objects.count() == 1 and Chunk.objects.count() == 3 and ChunkEmbedding.objects.count() == 3
    assert EmbeddingSet.objects.filter(knowledge_base_id=base.pk).count() == 0
    event = AuditEvent.objects.get(action="knowledge_base.deleted")
    assert event.metadata == {"documents": 1, "chunks": 3}


def test_changing_the_model_starts_a_new_set_while_the_old_stays_active(tenant: Organization) -> None:
    base = _base(tenant, embedding_model="simulated-embedding", dimensions=256)
    old = base.active_set_id
    updated = knowledge_base_update(
        organization=tenant, principal=ACTOR, knowledge_base=base, name="Renamed", dimensions=512
    )
    assert (updated.name, updated.dimensions, updated.active_set_id) == ("Renamed", 512, old)
    building = EmbeddingSet.objects.get(knowledge_base=base, status="queued")
    assert (building.embedding_model, building.dimensions) == ("simulated-embedding", 512)
    assert knowledge_base_get(organization=tenant, knowledge_base_id=base.pk).building_set == building  # type: ignore[attr-defined]
    # Changed again while building: that build is cancelled; back to the active set's: nothing to build.
    knowledge_base_update(organization=tenant, principal=ACTOR, knowledge_base=base, dimensions=256)
    building.refresh_from_db()
    assert building.status == "cancelled" and building.error_class == "superseded"
    assert not EmbeddingSet.objects.filter(knowledge_base=base, status__in=["queued", "running"]).exists()
    event = AuditEvent.objects.filter(action="knowledge_base.updated").first()
    assert event is not None and "dimensions" in event.metadata["fields"]


def test_lists_count_documents_and_chunks(tenant: Organization) -> None:
    base = _base(tenant, dimensions=256)
    _base(tenant, "Empty")
    _indexed_document(tenant, base)
    bases: list[Any] = knowledge_bases_list(organization=tenant)  # annotated with the counts
    listed = {found.name: (found.document_count, found.chunk_count) for found in bases}
    assert listed == {"Handbook": (1, 3), "Empty": (0, 0)}


@pytest.fixture
def on_b(two_tenants: tuple[Organization, Organization]) -> Iterator[tuple[Organization, Organization]]:
    yield two_tenants
    tenant_connection().set_schema_to_public()


def test_another_organizations_bases_and_documents_are_invisible(on_b: tuple[Organization, Organization]) -> None:
    a, b = on_b
    tenant_connection().set_tenant(a)
    base = _base(a)
    document = _upload(a, base)
    tenant_connection().set_tenant(b)
    assert knowledge_bases_list(organization=b) == []
    with pytest.raises(KnowledgeNotFound):
        knowledge_base_get(organization=b, knowledge_base_id=base.pk)
    # The same name is free in B; B's base has none of A's documents.
    own = _base(b)
    with pytest.raises(KnowledgeNotFound):
        document_get(knowledge_base=own, document_id=document.pk)
    tenant_connection().set_tenant(a)
    assert document_get(knowledge_base=base, document_id=document.pk) == document
