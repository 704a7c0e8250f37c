"""Searching while a knowledge base is re-embedded, through the real pipeline (ingestion and the
embedding set's build as durable work, the simulator's embedding model): searches answer from the
old vectors, unchanged, until the new set is complete, then from the new set at once."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pgvector.django import CosineDistance

from apps.accounts.principals import Principal
from apps.knowledge import ingestion
from apps.knowledge.ingestion import DOCUMENT, EMBEDDING_SET
from apps.knowledge.models import ChunkEmbedding, EmbeddingSet, KnowledgeBase
from apps.knowledge.search import SearchResults, knowledge_search, plan_counts_forget
from apps.knowledge.services import document_upload, knowledge_base_create, knowledge_base_update
from apps.llm.models import UsageAttempt
from apps.tenants.models import Organization
from apps.work.services import work_execute
from tests.knowledge.factories import llm_rate_limits_forget, simulated_embedding

ACTOR = Principal(kind="user", id="1", label="owner@example.com")
QUERY = "w1x3 w1x4 in part one"


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    llm_rate_limits_forget()


def _search(organization: Organization, knowledge_base_id: Any, request_id: str) -> SearchResults:
    plan_counts_forget()
    return knowledge_search(
        organization=organization,
        principal=ACTOR,
        # Read afresh, as each request reads it.
        knowledge_base=KnowledgeBase.objects.select_related("active_set").get(pk=knowledge_base_id),
        query=QUERY,
        top_k=5,
        mode="vector",
        request_id=request_id,
    )


def _answer(found: SearchResults) -> list[tuple[int, float | None]]:
    return [(hit.chunk_id, hit.vector_score) for hit in found.hits]


def test_searches_answer_from_the_old_set_while_the_new_one_is_built_then_from_the_new_one(
    tenant: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = knowledge_base_create(
        organization=tenant,
        principal=ACTOR,
        name="Handbook",
        embedding_model="simulated-embedding",
        dimensions=256,
        chunk_tokens=64,
        chunk_overlap_tokens=8,
    )
    text = "# Handbook\n\n" + "\n\n".join(
        f"## Part {part}\n\n" + " ".join(f"w{part}x{n}" for n in range(120)) for part in range(3)
    )
    document = document_upload(
        organization=tenant,
        principal=ACTOR,
        knowledge_base=base,
        filename="guide.md",
        content_type=None,
        content=text.encode(),
    )
    work_execute(organization=tenant, kind=DOCUMENT, item_id=document.pk)
    old_set = base.active_set_id
    before = _search(tenant, base.pk, "before")
    assert len(before.hits) == 5

    base = knowledge_base_update(organization=tenant, principal=ACTOR, knowledge_base=base, dimensions=384)
    new_set = EmbeddingSet.objects.get(knowledge_base=base, status="queued")
    total = ChunkEmbedding.objects.filter(embedding_set_id=old_set).count()
    # Build the new set two chunks at a time, searching after each batch.
    monkeypatch.setattr(ingestion, "BATCH_CHUNKS", 2)
    publish = ingestion._set_progress_publish
    during: list[tuple[int, int | None, SearchResults]] = []

    def publish_and_search(organization: Organization, embedding_set: EmbeddingSet) -> None:
        publish(organization, embedding_set)
        built = ChunkEmbedding.objects.filter(embedding_set=new_set).count()
        active = KnowledgeBase.objects.get(pk=base.pk).active_set_id
        during.append((built, active, _search(organization, base.pk, f"during-{uuid.uuid4().hex}")))

    monkeypatch.setattr(ingestion, "_set_progress_publish", publish_and_search)
    work_execute(organization=tenant, kind=EMBEDDING_SET, item_id=new_set.pk)

    partial = [(built, found) for built, active, found in during if active == old_set]
    assert any(0 < built < total for built, _ in partial), "searched while the new set was half built"
    for _, found in partial:
        assert _answer(found) == _answer(before)  # the old vectors, every chunk, the same scores
    # Switched in one update: the next search embeds the query at 384 dimensions and reads the new set.
    assert KnowledgeBase.objects.get(pk=base.pk).active_set_id == new_set.pk
    after = _search(tenant, base.pk, "after")
    query = simulated_embedding(QUERY, 384)
    exact = list(
        ChunkEmbedding.objects.filter(embedding_set=new_set)
        .annotate(distance=CosineDistance("embedding", query))
        .order_by("distance")
        .values_list("chunk_id", "distance")[:5]
    )
    assert [hit.chunk_id for hit in after.hits] == [chunk_id for chunk_id, _ in exact]
    assert [hit.vector_score for hit in after.hits] == pytest.approx([1 - d for _, d in exact], abs=1e-5)
    assert _answer(after) != _answer(before)
    assert UsageAttempt.objects.filter(request_id__startswith="during-", source="retrieval").count() == len(during)
