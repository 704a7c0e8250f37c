"""Filtered vector search stays complete: pgvector 0.6.2's HNSW scan yields at most `ef_search`
candidates and filters them afterwards, so a small knowledge base beside a large one (or a selective
metadata filter) gets too few rows from the index. knowledge_search chooses exact search there,
HNSW with over-fetch elsewhere, and falls back to exact search when the index came back short; the
plans are checked with EXPLAIN."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models.functions import Cast
from pgvector.django import CosineDistance, VectorField

from apps.accounts.principals import Principal
from apps.knowledge import search
from apps.knowledge.models import Chunk, ChunkEmbedding, Document, KnowledgeBase
from apps.knowledge.search import knowledge_search, plan_counts_forget, search_plan, vector_candidates
from apps.tenants.models import Organization
from tests.knowledge.factories import (
    document_make,
    knowledge_base_make,
    llm_rate_limits_forget,
    near,
    simulated_embedding,
)

KEY = Principal(kind="api_key", id="7", label="tests (cos_x)")
DIMENSIONS = 256
QUERY = "how do I rotate the signing keys"
LARGE_ROWS = 1500
SMALL_ROWS = 30
TOP_K = 10


@pytest.fixture(autouse=True)
def _fresh_plan_counts() -> None:
    plan_counts_forget()
    llm_rate_limits_forget()


def _fill(knowledge_base: KnowledgeBase, vectors: Sequence[Sequence[float]], *, documents: int = 1) -> list[Document]:
    """Chunks with vectors in the active set, spread over `documents` documents (metadata part=n)."""
    made = [
        document_make(knowledge_base, title=f"{knowledge_base.name} {n}", metadata={"part": n})
        for n in range(documents)
    ]
    chunks = Chunk.objects.bulk_create(
        Chunk(
            document=made[index % documents],
            knowledge_base=knowledge_base,
            ordinal=index // documents,
            text=f"{knowledge_base.name} chunk {index}",
            token_estimate=5,
        )
        for index in range(len(vectors))
    )
    for document in made:
        Document.objects.filter(pk=document.pk).update(chunk_count=len(vectors) // documents)
    ChunkEmbedding.objects.bulk_create(
        ChunkEmbedding(
            embedding_set=knowledge_base.active_set, chunk=chunk, dimensions=DIMENSIONS, embedding=list(vector)
        )
        for chunk, vector in zip(chunks, vectors, strict=True)
    )
    return made


def _exact(knowledge_base: KnowledgeBase, vector: list[float], **filters: Any) -> list[int]:
    rows = ChunkEmbedding.objects.filter(embedding_set_id=knowledge_base.active_set_id, **filters)
    return list(
        rows.annotate(distance=CosineDistance("embedding", vector))
        .order_by("distance")
        .values_list("chunk_id", flat=True)[:TOP_K]
    )


@pytest.fixture
def archive_and_notes(tenant: Organization) -> tuple[KnowledgeBase, KnowledgeBase, list[Document], list[float]]:
    """A large knowledge base whose chunks are all nearer the query than any of a small one's."""
    query = simulated_embedding(QUERY, DIMENSIONS)
    archive = knowledge_base_make(name="Archive", dimensions=DIMENSIONS)
    parts = _fill(
        archive, [near(query, similarity=0.5 + 0.4 * n / LARGE_ROWS, seed=n) for n in range(LARGE_ROWS)], documents=10
    )
    notes = knowledge_base_make(name="Notes", dimensions=DIMENSIONS)
    _fill(notes, [near(query, similarity=0.3 + n / 1000, seed=10_000 + n) for n in range(SMALL_ROWS)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE knowledge_chunkembedding")
    return archive, notes, parts, query


def _plan_text(queryset: Any) -> str:
    return str(queryset.explain())


def _statement_plan(statement: tuple[str, dict[str, Any]]) -> str:
    return search.vector_candidates_explain(*statement)


def _search(organization: Organization, knowledge_base: KnowledgeBase, **options: Any) -> search.SearchResults:
    return knowledge_search(
        organization=organization,
        principal=KEY,
        knowledge_base=knowledge_base,
        query=QUERY,
        top_k=TOP_K,
        mode="vector",
        request_id=f"plan-{uuid.uuid4().hex}",
        **options,
    )


def test_the_naive_hnsw_query_returns_too_few_rows_for_a_small_knowledge_base(
    tenant: Organization, archive_and_notes: tuple[KnowledgeBase, KnowledgeBase, list[Document], list[float]]
) -> None:
    _, notes, _, query = archive_and_notes
    naive = (
        ChunkEmbedding.objects.filter(embedding_set_id=notes.active_set_id, dimensions=DIMENSIONS)
        .annotate(distance=CosineDistance(Cast("embedding", VectorField(dimensions=DIMENSIONS)), query))
        .order_by("distance")
        .values_list("chunk_id", flat=True)[:TOP_K]
    )
    with transaction.atomic():
        # Ordered through the index (what the planner picks when it expects the filter to keep many
        # rows), at pgvector's default ef_search of 40: the 40 candidates are all the archive's.
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('enable_sort', 'off', true)")
        assert "knowledge_vector_hnsw_256" in _plan_text(naive)
        assert len(list(naive)) < TOP_K
    found = _search(tenant, notes)
    assert found.plan == "exact"
    assert [hit.chunk_id for hit in found.hits] == _exact(notes, query) and len(found.hits) == TOP_K


def test_each_plan_uses_the_index_it_means_to(
    tenant: Organization,
    archive_and_notes: tuple[KnowledgeBase, KnowledgeBase, list[Document], list[float]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    archive, notes, _, query = archive_and_notes
    small = search_plan(embedding_set=notes.active_set, filters={}, wanted=TOP_K)  # type: ignore[arg-type]
    assert (small.method, small.kept_rows, small.dimension_rows) == ("exact", SMALL_ROWS, LARGE_ROWS + SMALL_ROWS)
    exact = _statement_plan(
        vector_candidates(embedding_set=notes.active_set, vector=query, filters={}, method="exact", limit=TOP_K)  # type: ignore[arg-type]
    )
    # The set's rows through a btree on embedding_set_id, sorted by the distance: no HNSW index.
    assert "knowledge_vector_hnsw" not in exact and "Sort" in exact, exact
    assert f"Index Cond: (embedding_set_id = {notes.active_set_id})" in exact, exact

    monkeypatch.setattr(search, "EXACT_SEARCH_MAX_ROWS", 100)  # the archive counts as large
    large = search_plan(embedding_set=archive.active_set, filters={}, wanted=TOP_K)  # type: ignore[arg-type]
    assert (large.method, large.ef_search) == ("hnsw", search.HNSW_EF_SEARCH)
    hnsw = _statement_plan(
        vector_candidates(embedding_set=archive.active_set, vector=query, filters={}, method="hnsw", limit=TOP_K)  # type: ignore[arg-type]
    )
    assert "Index Scan using knowledge_vector_hnsw_256" in hnsw, hnsw
    found = _search(tenant, archive)
    assert found.plan == "hnsw" and len(found.hits) == TOP_K
    # HNSW is approximate: most of the exact answer.
    assert len({hit.chunk_id for hit in found.hits} & set(_exact(archive, query))) >= TOP_K * 0.8


def test_a_selective_filter_on_a_large_knowledge_base_still_returns_top_k(
    tenant: Organization,
    archive_and_notes: tuple[KnowledgeBase, KnowledgeBase, list[Document], list[float]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    archive, _, parts, query = archive_and_notes
    monkeypatch.setattr(search, "EXACT_SEARCH_MAX_ROWS", 20)
    # One part in ten (150 rows of 1,530 of the dimension): ef_search raised so that three times
    # top_k are expected to pass the filter.
    plan = search_plan(embedding_set=archive.active_set, filters={"part": 3}, wanted=TOP_K)  # type: ignore[arg-type]
    assert (plan.method, plan.kept_rows) == ("hnsw", 150)
    assert plan.ef_search == math.ceil(TOP_K * search.HNSW_OVERFETCH * (LARGE_ROWS + SMALL_ROWS) / 150) == 306
    # (Through the index, or a join the planner finds cheaper, which is exact: the rows are right either way.)
    found = _search(tenant, archive, filters={"part": 3})
    assert len(found.hits) == TOP_K and {hit.document_id for hit in found.hits} == {parts[3].pk}
    assert found.plan == "hnsw"
    # Part 3's vectors moved away from the query: the index's candidates are the other parts', the
    # filter leaves too few, and the search falls back to exact search.
    far = near(query, similarity=-0.5, seed=1)
    ChunkEmbedding.objects.filter(chunk__document=parts[3]).update(embedding=far)
    plan_counts_forget()
    # The index path, as the planner takes it at real sizes: at 1,530 rows, sorting the part's 150
    # rows can look cheaper (exact, right rows, but the fallback would go untested).
    with connection.cursor() as cursor:
        cursor.execute("SET enable_sort = off")
    try:
        found = _search(tenant, archive, filters={"part": 3})
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET enable_sort")
    assert found.plan == "hnsw+exact" and len(found.hits) == TOP_K
    assert {hit.document_id for hit in found.hits} == {parts[3].pk}
    # A filter keeping too small a share for any ef_search (30 rows of 1,530: 1,530 > 1,000): exact.
    Document.objects.filter(pk=parts[3].pk).update(chunk_count=28)
    plan_counts_forget()
    assert search_plan(embedding_set=archive.active_set, filters={"part": 3}, wanted=TOP_K).method == "exact"  # type: ignore[arg-type]
