"""Knowledge search (apps.knowledge.search): vector, full-text and hybrid order, metadata filters,
bounds, the ledger, two organizations, and answering from the old vectors while new ones are built.

Vectors are written directly: the query is embedded by the simulator's embedding model (a vector
seeded by the text), and chunks get vectors at chosen cosine similarities to it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django_tenants.utils import schema_context

from apps.accounts.principals import Principal
from apps.knowledge.models import KnowledgeBase
from apps.knowledge.search import KnowledgeSearchInvalid, SearchResults, knowledge_search, plan_counts_forget
from apps.llm.models import UsageAttempt
from apps.tenants.models import Organization
from tests.knowledge.factories import (
    chunk_make,
    document_make,
    embedding_set_make,
    knowledge_base_make,
    llm_rate_limits_forget,
    near,
    simulated_embedding,
    vector_add,
)

KEY = Principal(kind="api_key", id="7", label="tests (cos_x)")
DIMENSIONS = 256
QUERY = "refund policy for damaged parcels"


@pytest.fixture(autouse=True)
def _fresh_plan_counts() -> None:
    plan_counts_forget()
    llm_rate_limits_forget()


def _search(
    organization: Organization, knowledge_base: KnowledgeBase, query: Any = QUERY, **options: Any
) -> SearchResults:
    return knowledge_search(
        organization=organization,
        principal=KEY,
        knowledge_base=knowledge_base,
        query=query,
        request_id=str(options.pop("request_id", f"search-{uuid.uuid4().hex}")),
        **options,
    )


def _handbook(name: str = "Handbook") -> tuple[KnowledgeBase, list[int]]:
    """Four chunks: 0 and 1 near the query by meaning, 1 and 2 with all its words (1 closer
    together), 3 neither."""
    knowledge_base = knowledge_base_make(name=name, dimensions=DIMENSIONS)
    query_vector = simulated_embedding(QUERY, DIMENSIONS)
    document = document_make(knowledge_base, title="Policies", metadata={"team": "support", "year": 2026})
    texts = [
        ("Money back within fourteen days of delivery.", 0.9, "Returns"),
        ("Refund policy for damaged parcels: a refund within days.", 0.7, "Returns / Damage"),
        ("Parcels: our refund rules are long. Some policy text follows here, then damaged goods.", 0.1, "Shipping"),
        ("Our offices close at six.", 0.05, "Contact"),
    ]
    chunks = [
        chunk_make(
            document,
            ordinal=ordinal,
            text=text,
            heading_path=heading,
            vector=near(query_vector, similarity=similarity, seed=ordinal),
        )
        for ordinal, (text, similarity, heading) in enumerate(texts)
    ]
    return knowledge_base, [chunk.pk for chunk in chunks]


def test_vector_search_orders_by_cosine_similarity(tenant: Organization) -> None:
    knowledge_base, chunks = _handbook()
    found = _search(tenant, knowledge_base, mode="vector", top_k=3)
    assert [hit.chunk_id for hit in found.hits] == chunks[:3]
    assert [hit.vector_score for hit in found.hits] == pytest.approx([0.9, 0.7, 0.1], abs=1e-4)
    assert found.hits[0].score == found.hits[0].vector_score and found.hits[0].text_rank is None
    first = found.hits[0]
    assert (first.document_title, first.ordinal, first.heading_path) == ("Policies", 0, "Returns")
    assert found.model == "simulated-embedding" and found.cost_usd > 0 and found.plan == "exact"


def test_text_search_orders_by_rank_and_costs_nothing(tenant: Organization) -> None:
    knowledge_base, chunks = _handbook()
    found = _search(tenant, knowledge_base, mode="text", top_k=5, request_id="text-only")
    # websearch_to_tsquery: every word (stemmed, stop words dropped) must be there; ts_rank_cd
    # ranks chunk 1, where they stand together, above chunk 2.
    assert [hit.chunk_id for hit in found.hits] == [chunks[1], chunks[2]]
    ranks = [hit.text_rank or 0.0 for hit in found.hits]
    assert ranks[0] > ranks[1] > 0
    assert found.cost_usd == 0 and found.model is None and found.hits[0].vector_score is None
    assert not UsageAttempt.objects.filter(request_id="text-only").exists()


def test_hybrid_search_fuses_both_lists_by_reciprocal_rank(tenant: Organization) -> None:
    knowledge_base, chunks = _handbook()
    found = _search(tenant, knowledge_base, mode="hybrid", top_k=4)
    # Chunk 1 is second by meaning and first by words: first fused. Chunk 0 (first by meaning only)
    # and chunk 2 (third by meaning, second by words) follow; chunk 3 is in the vector list only.
    assert [hit.chunk_id for hit in found.hits] == [chunks[1], chunks[2], chunks[0], chunks[3]]
    best = found.hits[0]
    assert best.score == pytest.approx(1 / 61 + 1 / 62, abs=1e-6)
    assert best.vector_score == pytest.approx(0.7, abs=1e-4) and best.text_rank is not None
    # The query's words are marked in the text, by their stems ("polici" marks "policy").
    marked = [best.text[start:end] for start, end in best.matches]
    assert marked == ["Refund", "policy", "damaged", "parcels", "refund"]


def test_metadata_filters_keep_only_matching_documents(tenant: Organization) -> None:
    knowledge_base, _ = _handbook()
    query_vector = simulated_embedding(QUERY, DIMENSIONS)
    other = document_make(knowledge_base, title="Sales notes", metadata={"team": "sales", "year": 2026})
    sales = chunk_make(
        other,
        ordinal=0,
        text="Enterprise deals: refund policy for damaged parcels.",
        vector=near(query_vector, similarity=0.95, seed=9),
    )
    everything = _search(tenant, knowledge_base, mode="hybrid", top_k=10)
    assert sales.pk in {hit.chunk_id for hit in everything.hits}
    for mode in ("vector", "text", "hybrid"):
        found = _search(tenant, knowledge_base, mode=mode, top_k=10, filters={"team": "support", "year": 2026})
        assert found.hits and sales.pk not in {hit.chunk_id for hit in found.hits}, mode
        only_sales = _search(tenant, knowledge_base, mode=mode, top_k=10, filters={"team": "sales"})
        assert [hit.chunk_id for hit in only_sales.hits] == [sales.pk], mode
    assert _search(tenant, knowledge_base, filters={"year": 2025}).hits == []
    assert _search(tenant, knowledge_base, filters={"year": "2026"}).hits == []  # the type counts


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
        ({"query": "x" * 2001}, "query"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 51}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"mode": "semantic"}, "mode"),
        ({"filters": {f"k{n}": n for n in range(11)}}, "filters"),
        ({"filters": ["team"]}, "filters"),
        ({"filters": {"Team": "x"}}, "filters.Team"),
        ({"filters": {"k" * 41: "x"}}, "filters." + "k" * 40),
        ({"filters": {"team": {"$ne": 1}}}, "filters.team"),
        ({"filters": {"team": None}}, "filters.team"),
        ({"filters": {"team": "x" * 201}}, "filters.team"),
        ({"filters": {"score": float("nan")}}, "filters.score"),
    ],
)
def test_requests_out_of_bounds_are_refused_naming_the_field(
    tenant: Organization, options: dict[str, object], param: str
) -> None:
    knowledge_base = knowledge_base_make(dimensions=DIMENSIONS)
    arguments = {"query": QUERY, **options}
    with pytest.raises(KnowledgeSearchInvalid) as refused:
        _search(tenant, knowledge_base, request_id="refused", **arguments)
    assert (refused.value.http_status, refused.value.param) == (400, param)
    assert not UsageAttempt.objects.filter(request_id="refused").exists()  # refused before any call


def test_the_query_embedding_is_in_the_ledger_as_retrieval(tenant: Organization) -> None:
    knowledge_base, _ = _handbook()
    found = _search(tenant, knowledge_base, mode="hybrid", request_id="search-ledger-1")
    (attempt,) = UsageAttempt.objects.filter(request_id="search-ledger-1")
    assert (attempt.source, attempt.model_requested, attempt.cost_usd) == (
        "retrieval",
        "simulated-embedding",
        found.cost_usd,
    )


def test_two_organizations_each_search_only_their_own_chunks(two_tenants: tuple[Organization, Organization]) -> None:
    organization_a, organization_b = two_tenants
    query_vector = simulated_embedding(QUERY, DIMENSIONS)
    found = {}
    for organization, word in ((organization_a, "alpha"), (organization_b, "bravo")):
        with schema_context(organization.schema_name):
            knowledge_base = knowledge_base_make(name="Handbook", dimensions=DIMENSIONS)
            document = document_make(knowledge_base, title=f"{word} policies")
            for ordinal in range(3):
                chunk_make(
                    document,
                    ordinal=ordinal,
                    text=f"{word} refund policy number {ordinal}",
                    vector=near(query_vector, similarity=0.9 - ordinal / 10, seed=ordinal),
                )
            found[word] = _search(organization, knowledge_base, mode="hybrid", top_k=10)
    for word, other in (("alpha", "bravo"), ("bravo", "alpha")):
        assert len(found[word].hits) == 3
        assert all(word in hit.text and other not in hit.text for hit in found[word].hits)
    # Each organization's ledger has its own search.
    for organization in (organization_a, organization_b):
        with schema_context(organization.schema_name):
            assert UsageAttempt.objects.filter(source="retrieval").count() == 1


def test_search_answers_from_the_old_set_until_the_new_one_is_switched_to(tenant: Organization) -> None:
    knowledge_base, chunks = _handbook()
    old_set = knowledge_base.active_set
    assert old_set is not None
    # A new set at another dimension count is being built: half its vectors are written.
    new_set = embedding_set_make(knowledge_base, dimensions=384, activate=False)
    new_query = simulated_embedding(QUERY, 384)
    reversed_order = list(reversed(chunks))
    for rank, chunk_id in enumerate(reversed_order[:2]):
        from apps.knowledge.models import Chunk

        vector_add(
            Chunk.objects.get(pk=chunk_id),
            near(new_query, similarity=0.9 - rank / 10, seed=rank),
            embedding_set=new_set,
        )
    during = _search(tenant, knowledge_base, mode="vector", top_k=4)
    assert [hit.chunk_id for hit in during.hits] == chunks  # the old set's order, every chunk
    # The rest is written, then the knowledge base switches in one update.
    for rank, chunk_id in enumerate(reversed_order[2:], start=2):
        from apps.knowledge.models import Chunk

        vector_add(
            Chunk.objects.get(pk=chunk_id),
            near(new_query, similarity=0.9 - rank / 10, seed=rank),
            embedding_set=new_set,
        )
    KnowledgeBase.objects.filter(pk=knowledge_base.pk).update(active_set=new_set, dimensions=384)
    knowledge_base.refresh_from_db()
    after = _search(tenant, knowledge_base, mode="vector", top_k=4, request_id="after-switch")
    assert [hit.chunk_id for hit in after.hits] == reversed_order
    (attempt,) = UsageAttempt.objects.filter(request_id="after-switch")
    assert attempt.model_requested == "simulated-embedding"
