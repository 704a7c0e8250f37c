"""knowledge 0003 moves the documents inserted before knowledge bases existed (from code: there
was no upload) into a knowledge base of their own, "Documents", embedded with
text-embedding-3-small at 1,536 dimensions as they were: every document, chunk and vector kept,
the chunks searchable by words too."""

from __future__ import annotations

from apps.knowledge.models import Chunk, ChunkEmbedding, Document, KnowledgeBase
from apps.tenants.models import Organization
from tests.support.schema_migrations import migrate, models_at

BEFORE = [("knowledge", "0002_legacy_documents")]


def test_legacy_documents_move_into_a_knowledge_base_with_their_chunks_and_vectors(tenant: Organization) -> None:
    executor = migrate(BEFORE)
    old = models_at(executor, BEFORE)
    LegacyDocument, LegacyChunk = (
        old.get_model("knowledge", "LegacyDocument"),
        old.get_model("knowledge", "LegacyChunk"),
    )
    policy = LegacyDocument.objects.create(
        title="Refund policy", source="policy.md", created_by_id="7", created_by_label="ada"
    )
    faq = LegacyDocument.objects.create(title="FAQ")
    vector = [0.0] * 1536
    vector[3] = 1.0
    LegacyChunk.objects.create(document=policy, ordinal=0, text="Refunds within 30 days.", embedding=vector)
    LegacyChunk.objects.create(document=policy, ordinal=1, text="Shipping is not refunded.", embedding=vector)
    LegacyChunk.objects.create(document=faq, ordinal=0, text="Not embedded yet.", embedding=None)

    migrate()
    base = KnowledgeBase.objects.get()
    assert (base.name, base.embedding_model, base.dimensions) == ("Documents", "text-embedding-3-small", 1536)
    active = base.active_set
    assert active is not None
    assert (active.status, active.embedding_model, active.dimensions) == ("succeeded", "text-embedding-3-small", 1536)
    assert active.activated_at is not None
    moved = {document.title: document for document in Document.objects.all()}
    assert set(moved) == {"Refund policy", "FAQ"}
    refund = moved["Refund policy"]
    assert (refund.status, refund.stage, refund.chunk_count, refund.embedded_count) == ("succeeded", "indexed", 2, 2)
    assert refund.metadata == {"legacy_id": policy.id} and refund.filename == "policy.md"
    assert (refund.principal_kind, refund.principal_id, refund.principal_label) == ("user", "7", "ada")
    assert (moved["FAQ"].chunk_count, moved["FAQ"].embedded_count, moved["FAQ"].principal_kind) == (1, 0, "system")
    chunks = list(Chunk.objects.filter(document=refund).order_by("ordinal"))
    assert [chunk.text for chunk in chunks] == ["Refunds within 30 days.", "Shipping is not refunded."]
    assert all(chunk.search_vector and chunk.knowledge_base_id == base.pk for chunk in chunks)
    vectors = ChunkEmbedding.objects.filter(embedding_set=active)
    assert vectors.count() == 2 and set(vectors.values_list("dimensions", flat=True)) == {1536}
    assert list(vectors.first().embedding) == vector  # type: ignore[union-attr]
    assert not ChunkEmbedding.objects.filter(chunk__document=moved["FAQ"]).exists()
    assert Chunk.objects.filter(search_vector="refund").count() == 2


def test_without_legacy_documents_no_knowledge_base_is_made(tenant: Organization) -> None:
    migrate(BEFORE)
    migrate()
    assert not KnowledgeBase.objects.exists()
