"""Ingestion and re-embedding run by the durable-work runtime in this process (the simulator embeds):
stages and counts, failures with reasons, exactly-once vectors and ledger rows, a budget stop and
its resume, cancel, a re-embedding switch. Worker processes: test_ingestion_workers.py."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from apps.accounts.principals import Principal
from apps.audit.models import AuditEvent
from apps.billing.selectors import entitlement_cache_forget
from apps.knowledge import ingestion
from apps.knowledge.ingestion import DOCUMENT, EMBEDDING_SET
from apps.knowledge.models import Chunk, ChunkEmbedding, Document, DocumentUpload, EmbeddingSet, KnowledgeBase
from apps.knowledge.selectors import document_progress, embedding_set_progress
from apps.knowledge.services import (
    document_cancel,
    document_delete,
    document_resume,
    document_upload,
    knowledge_base_create,
    knowledge_base_update,
)
from apps.llm.calls import budget_set
from apps.llm.models import UsageAttempt
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.work.services import work_execute
from tests.factories import TEST_ACTOR, plan_make
from tests.knowledge.pdfs import pdf_encrypted, pdf_make

ACTOR = Principal(kind="user", id="7", label="ada@example.com")


def _base(organization: Organization, name: str = "Handbook", **fields: Any) -> KnowledgeBase:
    values = {
        "embedding_model": "simulated-embedding",
        "dimensions": 256,
        "chunk_tokens": 64,
        "chunk_overlap_tokens": 8,
    }
    return knowledge_base_create(organization=organization, principal=ACTOR, name=name, **{**values, **fields})


def _upload(organization: Organization, base: KnowledgeBase, content: bytes, filename: str = "guide.md") -> Document:
    return document_upload(
        organization=organization,
        principal=ACTOR,
        knowledge_base=base,
        filename=filename,
        content_type=None,
        content=content,
    )


def _run(organization: Organization, document: Document) -> Document:
    work_execute(organization=organization, kind=DOCUMENT, item_id=document.pk)
    document.refresh_from_db()
    return document


def _markdown(sections: int = 3, words: int = 120) -> bytes:
    parts = []
    for number in range(sections):
        parts.append(f"## Part {number}\n\n" + " ".join(f"w{number}x{n}" for n in range(words)))
    return ("# Handbook\n\n" + "\n\n".join(parts)).encode()


def _ledger(prefix: str) -> list[UsageAttempt]:
    return list(UsageAttempt.objects.filter(request_id__startswith=prefix).order_by("id"))


def test_a_document_is_parsed_chunked_embedded_and_indexed(tenant: Organization) -> None:
    base = _base(tenant)
    document = _run(tenant, _upload(tenant, base, _markdown()))
    assert (document.status, document.stage, document.error_class) == ("succeeded", "indexed", "")
    chunks = list(Chunk.objects.filter(document=document).order_by("ordinal"))
    assert document.chunk_count == document.embedded_count == len(chunks) > 3
    assert {chunk.heading_path for chunk in chunks} == {f"Handbook / Part {n}" for n in range(3)}
    assert all(chunk.search_vector for chunk in chunks)
    vectors = ChunkEmbedding.objects.filter(chunk__document=document)
    assert vectors.count() == len(chunks) and set(vectors.values_list("embedding_set_id", flat=True)) == {
        base.active_set_id
    }
    assert set(vectors.values_list("dimensions", flat=True)) == {256}
    assert not DocumentUpload.objects.filter(document=document).exists()  # the bytes go once chunked
    rows = _ledger(f"kd{document.pk.hex}-")
    assert (
        rows
        and {row.status for row in rows} == {"succeeded"}
        and {row.source for row in rows} == {"knowledge_ingestion"}
    )
    assert document.cost_usd == sum(row.cost_usd for row in rows) > 0
    assert document_progress(document) | {"cost_usd": None} == {
        "id": str(document.pk),
        "status": "succeeded",
        "stage": "indexed",
        "chunk_count": len(chunks),
        "embedded_count": len(chunks),
        "error_class": None,
        "error_message": None,
        "cost_usd": None,
    }


def test_the_heading_path_is_embedded_with_each_chunk(tenant: Organization, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[list[str]] = []
    original = ingestion.embeddings_create

    def spy(**kwargs: Any) -> Any:
        sent.append(list(kwargs["body"]["input"]))
        assert kwargs["body"]["dimensions"] == 256
        return original(**kwargs)

    monkeypatch.setattr(ingestion, "embeddings_create", spy)
    base = _base(tenant)
    _run(tenant, _upload(tenant, base, b"# Guide\n\n## Install\n\nRun the installer."))
    assert sent == [["Guide / Install\n\nRun the installer."]]


@pytest.mark.parametrize(
    ("filename", "content", "code"),
    [
        ("locked.pdf", pdf_encrypted(["secret"]), "encrypted_pdf"),
        ("broken.pdf", b"%PDF-1.4\n" + b"\x00garbage" * 100, "broken_pdf"),
        ("scan.pdf", pdf_make([""]), "document_empty"),
        ("empty.html", b"<html><script>only()</script></html>", "document_empty"),
    ],
)
def test_an_unreadable_file_fails_with_its_reason_and_nothing_indexed(
    tenant: Organization, filename: str, content: bytes, code: str
) -> None:
    base = _base(tenant)
    document = _run(tenant, _upload(tenant, base, content, filename=filename))
    assert (document.status, document.error_class) == ("failed", code)
    assert document.error_message and "internal" not in document.error_message
    assert not Chunk.objects.filter(document=document).exists()
    assert not UsageAttempt.objects.filter(request_id__startswith=f"kd{document.pk.hex}-").exists()


def test_a_pdf_is_ingested_page_by_page(tenant: Organization) -> None:
    base = _base(tenant)
    document = _run(tenant, _upload(tenant, base, pdf_make(["Alpha page text", "Beta page text"]), "two.pdf"))
    assert document.status == "succeeded"
    assert list(Chunk.objects.filter(document=document).order_by("ordinal").values_list("heading_path", "text")) == [
        ("Page 1", "Alpha page text"),
        ("Page 2", "Beta page text"),
    ]


def test_a_document_over_the_chunk_bound_fails_whole(tenant: Organization, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingestion, "MAX_CHUNKS_PER_DOCUMENT", 3)
    base = _base(tenant)
    document = _run(tenant, _upload(tenant, base, _markdown(sections=5)))
    assert (document.status, document.error_class) == ("failed", "too_many_chunks")
    assert not Chunk.objects.filter(document=document).exists()


def test_a_budget_stop_keeps_what_was_embedded_and_resume_continues_without_repeating(
    tenant: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingestion, "BATCH_CHUNKS", 4)
    calls: list[list[str]] = []
    original = ingestion.embeddings_create

    def counting(**kwargs: Any) -> Any:
        calls.append(list(kwargs["body"]["input"]))
        if len(calls) == 3:  # the budget is spent before the third batch
            budget_set(organization=tenant, scope="organization", period="day", limit_usd=Decimal(0), actor=TEST_ACTOR)
        return original(**kwargs)

    monkeypatch.setattr(ingestion, "embeddings_create", counting)
    base = _base(tenant)
    document = _run(tenant, _upload(tenant, base, _markdown(sections=4)))
    assert (document.status, document.error_class) == ("failed", "budget_exceeded")
    assert "resume" in document.error_message
    assert document.stage == "chunked" and document.embedded_count == 8 < document.chunk_count
    budget_set(organization=tenant, scope="organization", period="day", limit_usd=Decimal(100), actor=TEST_ACTOR)
    document = document_resume(organization=tenant, principal=ACTOR, document=document)
    document = _run(tenant, document)
    assert document.status == "succeeded" and document.embedded_count == document.chunk_count
    # Each chunk was sent once when it was billed; the refused batch was sent again after the resume.
    billed = [row for row in _ledger(f"kd{document.pk.hex}-") if row.status == "succeeded"]
    assert len(billed) == len(calls) - 1
    inputs = Counter(text for batch in calls for text in batch)
    refused_batch = calls[2]
    assert all(inputs[text] == (2 if text in refused_batch else 1) for text in inputs)
    per_chunk = Counter(ChunkEmbedding.objects.filter(chunk__document=document).values_list("chunk_id", flat=True))
    assert set(per_chunk.values()) == {1} and len(per_chunk) == document.chunk_count


def test_a_cancelled_document_stops_and_resumes_where_it_was(
    tenant: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingestion, "BATCH_CHUNKS", 4)
    original = ingestion.embeddings_create
    batches = 0

    def cancelling(**kwargs: Any) -> Any:
        nonlocal batches
        batches += 1
        answer = original(**kwargs)
        if batches == 2:  # cancelled while its second batch was in flight: that batch is kept
            document_cancel(organization=tenant, principal=ACTOR, document=Document.objects.get())
        return answer

    monkeypatch.setattr(ingestion, "embeddings_create", cancelling)
    base = _base(tenant)
    document = _run(tenant, _upload(tenant, base, _markdown(sections=4)))
    assert (document.status, document.embedded_count, batches) == ("cancelled", 8, 2)
    monkeypatch.setattr(ingestion, "embeddings_create", original)
    document = _run(tenant, document_resume(organization=tenant, principal=ACTOR, document=document))
    assert document.status == "succeeded" and document.embedded_count == document.chunk_count
    assert len([row for row in _ledger(f"kd{document.pk.hex}-") if row.status == "succeeded"]) == -(
        -document.chunk_count // 4
    )


def test_a_document_deleted_while_ingesting_stops_quietly(
    tenant: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingestion, "BATCH_CHUNKS", 4)
    original = ingestion.embeddings_create

    def deleting(**kwargs: Any) -> Any:
        answer = original(**kwargs)
        document_delete(organization=tenant, principal=ACTOR, document=Document.objects.get())
        return answer

    monkeypatch.setattr(ingestion, "embeddings_create", deleting)
    base = _base(tenant)
    document = _upload(tenant, base, _markdown(sections=2))
    work_execute(organization=tenant, kind=DOCUMENT, item_id=document.pk)
    assert not Document.objects.exists() and not Chunk.objects.exists() and not ChunkEmbedding.objects.exists()
    assert AuditEvent.objects.filter(action="knowledge_document.deleted").count() == 1


def test_re_embedding_answers_from_the_old_set_until_the_new_one_is_complete(tenant: Organization) -> None:
    base = _base(tenant)
    old_set = base.active_set_id
    first = _run(tenant, _upload(tenant, base, _markdown(sections=2)))
    base = knowledge_base_update(organization=tenant, principal=ACTOR, knowledge_base=base, dimensions=512)
    new_set = EmbeddingSet.objects.get(knowledge_base=base, status="queued")
    assert base.active_set_id == old_set and base.dimensions == 512
    # A document ingested meanwhile gets vectors in both sets.
    second = _run(tenant, _upload(tenant, base, _markdown(sections=1), filename="late.md"))
    assert second.status == "succeeded"
    for chunk in Chunk.objects.filter(document=second):
        assert sorted(chunk.embeddings.values_list("embedding_set_id", "dimensions")) == [
            (old_set, 256),
            (new_set.pk, 512),
        ]
    assert KnowledgeBase.objects.get(pk=base.pk).active_set_id == old_set
    assert embedding_set_progress(new_set)["embedded_count"] == second.chunk_count
    work_execute(organization=tenant, kind=EMBEDDING_SET, item_id=new_set.pk)
    new_set.refresh_from_db()
    base.refresh_from_db()
    assert new_set.status == "succeeded" and new_set.activated_at is not None and base.active_set_id == new_set.pk
    assert not ChunkEmbedding.objects.filter(embedding_set_id=old_set).exists()
    total = Chunk.objects.filter(knowledge_base=base).count()
    per_chunk = Counter(ChunkEmbedding.objects.filter(embedding_set=new_set).values_list("chunk_id", flat=True))
    assert len(per_chunk) == total and set(per_chunk.values()) == {1}
    # The set embedded only what the documents had not: the late document's chunks were not billed again.
    set_inputs = sum(row.input_tokens for row in _ledger(f"ks{new_set.pk}-") if row.status == "succeeded")
    assert set_inputs > 0
    assert len(_ledger(f"ks{new_set.pk}-")) == -(-first.chunk_count // ingestion.BATCH_CHUNKS)
    first.refresh_from_db()
    assert first.embedded_count == first.chunk_count
    event = AuditEvent.objects.get(action="knowledge_base.reembedded")
    assert event.metadata["previous_set"] == old_set and event.metadata["dimensions"] == 512
    assert embedding_set_progress(new_set) | {"id": None} == {
        "id": None,
        "status": "succeeded",
        "embedding_model": "simulated-embedding",
        "dimensions": 512,
        "chunk_count": total,
        "embedded_count": total,
        "active": True,
        "error_class": None,
        "error_message": None,
    }


def test_ingestion_stays_in_its_organization(two_tenants: tuple[Organization, Organization]) -> None:
    a, b = two_tenants
    tenant_connection().set_tenant(a)
    document = _run(a, _upload(a, _base(a), _markdown(sections=1)))
    assert document.status == "succeeded"
    tenant_connection().set_tenant(b)
    assert not Chunk.objects.exists() and not ChunkEmbedding.objects.exists()
    assert not UsageAttempt.objects.filter(request_id__startswith="kd").exists()
    # B's worker can't run A's document: the id names nothing in B's schema.
    assert work_execute(organization=b, kind=DOCUMENT, item_id=document.pk) is None
    tenant_connection().set_schema_to_public()


def test_a_re_embedding_stopped_by_the_budget_continues_when_asked_again(
    tenant: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingestion, "BATCH_CHUNKS", 4)
    base = _base(tenant)
    document = _run(tenant, _upload(tenant, base, _markdown(sections=3)))
    knowledge_base_update(organization=tenant, principal=ACTOR, knowledge_base=base, dimensions=384)
    building = EmbeddingSet.objects.get(knowledge_base=base, status="queued")
    original = ingestion.embeddings_create
    calls = 0

    def refusing(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            budget_set(organization=tenant, scope="organization", period="day", limit_usd=Decimal(0), actor=TEST_ACTOR)
        return original(**kwargs)

    monkeypatch.setattr(ingestion, "embeddings_create", refusing)
    work_execute(organization=tenant, kind=EMBEDDING_SET, item_id=building.pk)
    building.refresh_from_db()
    assert (building.status, building.error_class) == ("failed", "budget_exceeded")
    kept = ChunkEmbedding.objects.filter(embedding_set=building).count()
    assert kept == 4 and KnowledgeBase.objects.get(pk=base.pk).active_set_id != building.pk
    budget_set(organization=tenant, scope="organization", period="day", limit_usd=Decimal(100), actor=TEST_ACTOR)
    # Asking for the same model again continues that build: what it embedded is not embedded again.
    knowledge_base_update(organization=tenant, principal=ACTOR, knowledge_base=base, dimensions=384)
    building.refresh_from_db()
    assert building.status == "queued" and EmbeddingSet.objects.filter(knowledge_base=base).count() == 2
    work_execute(organization=tenant, kind=EMBEDDING_SET, item_id=building.pk)
    building.refresh_from_db()
    assert building.status == "succeeded" and KnowledgeBase.objects.get(pk=base.pk).active_set_id == building.pk
    per_chunk = Counter(ChunkEmbedding.objects.filter(embedding_set=building).values_list("chunk_id", flat=True))
    assert len(per_chunk) == document.chunk_count and set(per_chunk.values()) == {1}
    assert ChunkEmbedding.objects.exclude(embedding_set=building).count() == 0
    billed = [row for row in _ledger(f"ks{building.pk}-") if row.status == "succeeded"]
    assert len(billed) == -(-document.chunk_count // 4)


def test_a_document_past_the_plans_chunk_limit_fails_and_resumes_after_an_upgrade(tenant: Organization) -> None:
    suite = tenant.plan
    tenant.plan = plan_make(code="few-chunks", max_knowledge_chunks=3)
    tenant.save(update_fields=["plan"])
    entitlement_cache_forget(tenant)
    base = _base(tenant)
    document = _run(tenant, _upload(tenant, base, _markdown(sections=2)))
    assert (document.status, document.error_class, document.stage) == ("failed", "plan_limit_chunks", "parsed")
    assert "upgrade" in document.error_message and not Chunk.objects.exists()
    tenant.plan = suite
    tenant.save(update_fields=["plan"])
    entitlement_cache_forget(tenant)
    document = _run(tenant, document_resume(organization=tenant, principal=ACTOR, document=document))
    assert document.status == "succeeded" and document.chunk_count > 3
