"""Knowledge search: a knowledge base's chunks nearest to a query by meaning (pgvector, cosine), by
words (PostgreSQL full text) or both fused by reciprocal rank, with metadata filters on documents.

The query is embedded through the governed embeddings path (routed, budgeted, rate-limited, in the
ledger with source `retrieval`) with the model and dimension count of the knowledge base's ACTIVE
embedding set, the set search answers from while a new one is built.

Choosing a plan. Each supported dimension count has one partial HNSW index over every vector of that
size in the organization's schema (all knowledge bases, old and new sets). pgvector 0.6.2 has no
iterative index scans: an HNSW scan yields at most `hnsw.ef_search` candidates and a filter (this
knowledge base's set, metadata) is applied to those afterwards, so a selective filter returns too
few rows (a small knowledge base beside a large one gets nothing back). So, per query:
- the rows the filter keeps are estimated (cheap counts, cached a minute per set);
- few rows (EXACT_SEARCH_MAX_ROWS): exact search, the distance computed over the set's rows found
  through its btree index (the uncast column, which the HNSW index can't serve);
- otherwise HNSW with `ef_search` raised so that the expected survivors of the filter are
  HNSW_OVERFETCH times what is needed (at most pgvector's 1,000), falling back to exact search when
  the filter keeps too small a share for that or fewer rows than needed come back.
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import psycopg
from django.contrib.postgres.search import SearchQuery, SearchRank
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q, Sum
from pgvector import Vector
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.types.json import Jsonb

from apps.accounts.principals import Principal
from apps.knowledge.ingestion import reducible
from apps.knowledge.models import Chunk, ChunkEmbedding, Document, EmbeddingSet, KnowledgeBase
from apps.knowledge.services import KnowledgeInvalid
from apps.llm.calls import CallSource, LlmRefusal, embeddings_create
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization

__all__ = [
    "EXACT_SEARCH_MAX_ROWS",
    "HNSW_EF_SEARCH",
    "MAX_FILTERS",
    "MAX_QUERY_CHARS",
    "MAX_TOP_K",
    "RRF_K",
    "Hit",
    "KnowledgeSearchInvalid",
    "SearchPlan",
    "SearchResults",
    "embedding_body",
    "knowledge_base_find",
    "knowledge_base_of_legacy_documents",
    "knowledge_search",
    "search_plan",
    "vector_candidates",
    "vector_candidates_explain",
    "vector_candidates_fetch",
]

Mode = Literal["hybrid", "vector", "text"]
MODES: tuple[str, ...] = ("hybrid", "vector", "text")

# Bounds of a search request (the REST API, the portal, workflow steps and agents all pass here).
MAX_QUERY_CHARS = 2000
MAX_TOP_K = 50
MAX_FILTERS = 10
MAX_FILTER_VALUE_CHARS = 200
FILTER_KEY = re.compile(r"[a-z0-9_]{1,40}")

# HNSW candidates per query (pgvector's default is 40): recall@10 about 0.95 at 1,536 dimensions
# with the m 32 / ef_construction 512 build (apps.knowledge.models; bench/knowledge.py and
# docs/knowledge.md give the figures at 384 and 1,536).
HNSW_EF_SEARCH = 110
HNSW_EF_SEARCH_MAX = 1000  # pgvector's own upper bound for hnsw.ef_search
# Under a filter, ef_search is raised so that about this many times the rows needed survive it.
HNSW_OVERFETCH = 3
# At or under this many rows kept by the filter, exact search (no index) is as fast as HNSW and
# always complete.
EXACT_SEARCH_MAX_ROWS = 5000
# Reciprocal rank fusion's constant (Cormack et al.): score = sum of 1 / (RRF_K + rank).
RRF_K = 60
# Each list a hybrid search fuses has this many times top_k candidates (at least 20, at most 150).
HYBRID_CANDIDATE_FACTOR = 3
# How long the counts a plan is chosen from are reused (they change only as documents come and go).
PLAN_COUNTS_TTL_S = 60.0
# Highlighting: terms of the query, and marks per hit, kept.
MAX_MATCH_TERMS = 32
MAX_MATCHES_PER_HIT = 64
MAX_STEM_PREFIX = 64  # a word longer than this matches a term only when the term is its prefix


class KnowledgeSearchInvalid(KnowledgeInvalid):
    """A search request out of bounds (400); `param` names the field."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message, param=param, code="invalid_request")


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    document_id: Any  # UUID
    document_title: str
    ordinal: int
    heading_path: str
    text: str
    score: float  # hybrid: the fused reciprocal-rank score; vector: vector_score; text: text_rank
    vector_score: float | None  # cosine similarity (1 - cosine distance), if the vector list had the chunk
    text_rank: float | None  # ts_rank_cd, if the full-text list had it
    matches: list[tuple[int, int]] = field(default_factory=list)  # [start, end) offsets in `text`

    def as_dict(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "document_id": str(self.document_id),
            "document_title": self.document_title,
            "ordinal": self.ordinal,
            "heading_path": self.heading_path,
            "text": self.text,
            "score": self.score,
            "vector_score": self.vector_score,
            "text_rank": self.text_rank,
            "matches": [list(match) for match in self.matches],
        }


@dataclass(frozen=True)
class SearchResults:
    hits: list[Hit]
    cost_usd: Decimal
    model: str | None  # the embedding model, if the query was embedded
    mode: str
    plan: str | None = None  # how the vector list was found: "hnsw", "hnsw+exact" (fell back) or "exact"


@dataclass(frozen=True)
class SearchPlan:
    method: Literal["hnsw", "exact"]
    ef_search: int
    kept_rows: int  # estimated rows the filter keeps
    dimension_rows: int  # rows in the dimension's HNSW index


def knowledge_base_find(*, reference: object) -> KnowledgeBase | None:
    """A knowledge base of the current organization (its schema) by id or by name (case-insensitive,
    as names are unique): how workflow steps name one. The active set comes with it."""
    if not isinstance(reference, str) or not reference.strip() or len(reference) > 100:
        return None
    bases = KnowledgeBase.objects.select_related("active_set")
    try:
        return bases.filter(pk=uuid.UUID(reference)).first()
    except ValueError:
        return bases.filter(name__iexact=reference.strip()).first()


def knowledge_base_of_legacy_documents(*, document_ids: object) -> KnowledgeBase | None:
    """The knowledge base holding documents by their ids from before knowledge bases (knowledge 0003
    kept each one's id as metadata `legacy_id`): what a workflow step saved then searches now."""
    if not isinstance(document_ids, list):
        return None
    ids = [value for value in document_ids[:100] if isinstance(value, int) and not isinstance(value, bool)]
    if not ids:
        return None
    document = Document.objects.filter(metadata__legacy_id__in=ids).select_related("knowledge_base__active_set").first()
    return document.knowledge_base if document is not None else None


# -- the request ---------------------------------------------------------------------------------------


def _filters_check(filters: object) -> dict[str, str | int | float | bool]:
    if filters is None:
        return {}
    if not isinstance(filters, Mapping):
        raise KnowledgeSearchInvalid("give filters as an object of metadata keys and values", param="filters")
    if len(filters) > MAX_FILTERS:
        raise KnowledgeSearchInvalid(f"at most {MAX_FILTERS} filters", param="filters")
    checked: dict[str, str | int | float | bool] = {}
    for key, value in filters.items():
        if not isinstance(key, str) or not FILTER_KEY.fullmatch(key):
            raise KnowledgeSearchInvalid(
                "a filter key is 1 to 40 characters of a-z, 0-9 and _", param=f"filters.{str(key)[:40]}"
            )
        if isinstance(value, str):
            if len(value) > MAX_FILTER_VALUE_CHARS:
                raise KnowledgeSearchInvalid(
                    f"a filter value is at most {MAX_FILTER_VALUE_CHARS} characters", param=f"filters.{key}"
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise KnowledgeSearchInvalid("a filter value must be a finite number", param=f"filters.{key}")
        elif not isinstance(value, bool | int):
            raise KnowledgeSearchInvalid("a filter value is a string, a number or a boolean", param=f"filters.{key}")
        checked[key] = value
    return checked


def _request_check(
    *, query: object, top_k: object, mode: object, filters: object
) -> tuple[str, int, str, dict[str, Any]]:
    if not isinstance(query, str) or not query.strip():
        raise KnowledgeSearchInvalid("give a query", param="query")
    if len(query) > MAX_QUERY_CHARS:
        raise KnowledgeSearchInvalid(f"a query is at most {MAX_QUERY_CHARS} characters", param="query")
    if "\x00" in query:
        raise KnowledgeSearchInvalid("a query can't contain NUL characters", param="query")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise KnowledgeSearchInvalid(f"top_k is an integer from 1 to {MAX_TOP_K}", param="top_k")
    if mode not in MODES:
        raise KnowledgeSearchInvalid(f"mode is one of {', '.join(MODES)}", param="mode")
    return query.strip(), top_k, str(mode), _filters_check(filters)


# -- the query's embedding -------------------------------------------------------------------------------


def embedding_body(*, model: str, dimensions: int, texts: str | list[str]) -> dict[str, Any]:
    """The embeddings request for a knowledge base's set, as ingestion sends it: `dimensions` for
    the models that take it (OpenAI's text-embedding-3 and the simulator: apps.knowledge.ingestion.
    reducible), which reduces larger embeddings to the set's size."""
    body: dict[str, Any] = {"model": model, "input": texts, "encoding_format": "float"}
    if reducible(model):
        body["dimensions"] = dimensions
    return body


def _query_embed(
    *, organization: Organization, principal: Principal, embedding_set: EmbeddingSet, query: str, request_id: str
) -> tuple[list[float], Decimal, str]:
    outcome = embeddings_create(
        organization=organization,
        principal=principal,
        body=embedding_body(model=embedding_set.embedding_model, dimensions=embedding_set.dimensions, texts=query),
        request_id=request_id,
        source=CallSource.RETRIEVAL,
    )
    vector = (outcome.body.get("data") or [{}])[0].get("embedding")
    if not isinstance(vector, list) or len(vector) != embedding_set.dimensions:
        raise LlmRefusal(
            502,
            "embedding_mismatch",
            f"{outcome.model} did not answer {embedding_set.dimensions} floats for the query",
            retryable=True,
        )
    return vector, outcome.cost_usd, outcome.model


# -- the plan ------------------------------------------------------------------------------------------


class _Counts:
    """Rows per embedding set of one dimension count, per (schema, dimension count), reused
    PLAN_COUNTS_TTL_S. Counted set by set through the btree on embedding_set_id (index-only
    scans), never by reading the vectors: a schema has few sets, and 384-dimension vectors are
    stored in the table's own pages, where a scan would read them all."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.entries: OrderedDict[tuple[str, int], tuple[float, dict[int, int]]] = OrderedDict()

    def _count(self, dimensions: int) -> dict[int, int]:
        vectors, sets = ChunkEmbedding._meta.db_table, EmbeddingSet._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT s.id, (SELECT count(*) FROM {vectors} v WHERE v.embedding_set_id = s.id)"  # noqa: S608
                f" FROM {sets} s WHERE s.dimensions = %s",
                [dimensions],
            )
            return {int(set_id): int(rows) for set_id, rows in cursor.fetchall()}

    def get(self, embedding_set: EmbeddingSet) -> tuple[int, int]:
        """(rows of the set, rows of every set of its dimension count: the partial index's size)."""
        key = (tenant_connection().schema_name, embedding_set.dimensions)
        now = time.monotonic()
        with self.lock:
            found = self.entries.get(key)
        if found is None or now - found[0] >= PLAN_COUNTS_TTL_S or embedding_set.pk not in found[1]:
            found = (now, self._count(embedding_set.dimensions))
            with self.lock:
                self.entries[key] = found
                self.entries.move_to_end(key)
                while len(self.entries) > self.size:
                    self.entries.popitem(last=False)
        per_set = found[1]
        return per_set.get(embedding_set.pk, 0), sum(per_set.values())

    def forget(self) -> None:
        with self.lock:
            self.entries.clear()


_counts = _Counts()


def _kept_share(knowledge_base: KnowledgeBase, filters: Mapping[str, Any]) -> float:
    """The share of the knowledge base's chunks in documents the metadata filters keep (documents
    are far fewer than chunks: a sum over them, not a count of chunks)."""
    if not filters:
        return 1.0
    totals = Document.objects.filter(knowledge_base=knowledge_base).aggregate(
        kept=Sum("chunk_count", filter=Q(metadata__contains=dict(filters)), default=0),
        all=Sum("chunk_count", default=0),
    )
    return int(totals["kept"]) / int(totals["all"]) if totals["all"] else 0.0


def search_plan(*, embedding_set: EmbeddingSet, filters: Mapping[str, Any], wanted: int) -> SearchPlan:
    """How to find the `wanted` nearest vectors of the set that pass the filters (see the module)."""
    set_rows, dimension_rows = _counts.get(embedding_set)
    kept = round(set_rows * _kept_share(embedding_set.knowledge_base, filters))
    if kept <= EXACT_SEARCH_MAX_ROWS or dimension_rows == 0:
        return SearchPlan("exact", 0, kept, dimension_rows)
    share = kept / dimension_rows
    ef_search = max(HNSW_EF_SEARCH, wanted, math.ceil(wanted * HNSW_OVERFETCH / share))
    if ef_search > HNSW_EF_SEARCH_MAX:
        return SearchPlan("exact", 0, kept, dimension_rows)
    return SearchPlan("hnsw", ef_search, kept, dimension_rows)


def plan_counts_forget() -> None:
    """Drop the cached counts (tests; an operator after a bulk load)."""
    _counts.forget()


class _VectorDumper(Dumper):
    """A query's embedding as pgvector's binary form (6 KB at 1,536 dimensions): no 30 KB literal
    formatted in Python and parsed by the server on every search."""

    format = Format.BINARY

    def dump(self, obj: Vector) -> bytes:
        return bytes(obj.to_binary())


def vector_candidates(
    *, embedding_set: EmbeddingSet, vector: list[float], filters: Mapping[str, Any], method: str, limit: int
) -> tuple[str, dict[str, Any]]:
    """The statement of one plan and its parameters: chunk ids nearest first with their cosine
    `distance`. HNSW: ordered by the distance over `embedding::vector(N)` with `dimensions = N`, the
    partial index's expression and predicate. Exact: ordered by the distance over the uncast column,
    which no index serves, over the set's rows (its btree).

    Tables are named with the organization's schema, and the set, the dimension count and the limit
    (integers of ours) are part of the text, so that a prepared statement's plan is this set's plan:
    a generic plan can't prove a partial index's predicate from a parameter, nor guess how many rows
    a parameter's set has. Only the query vector and the metadata filter are parameters."""
    schema = connection.ops.quote_name(tenant_connection().schema_name)
    dimensions = int(embedding_set.dimensions)
    column = f"(v.embedding::public.vector({dimensions}))" if method == "hnsw" else "v.embedding"
    params: dict[str, Any] = {"query": Vector(vector)}
    where = f"v.embedding_set_id = {int(embedding_set.pk)} AND v.dimensions = {dimensions}"
    if filters:
        where += (
            f" AND EXISTS (SELECT 1 FROM {schema}.knowledge_chunk c"  # noqa: S608 - a quoted schema
            f" JOIN {schema}.knowledge_document d ON d.id = c.document_id"
            " WHERE c.id = v.chunk_id AND d.metadata @> %(filters)s::jsonb)"
        )
        params["filters"] = Jsonb(dict(filters))
    sql = (
        f"SELECT v.chunk_id, {column} OPERATOR(public.<=>) %(query)s::public.vector AS distance"  # noqa: S608 - integers and a quoted schema
        f" FROM {schema}.knowledge_chunkembedding v WHERE {where} ORDER BY distance LIMIT {int(limit)}"
    )
    return sql, params


def _statement_run(sql: str, params: dict[str, Any], *, prepare: bool) -> list[tuple[Any, ...]]:
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.adapters.register_dumper(Vector, _VectorDumper)
        cursor.execute(sql, params, prepare=prepare)
        return cursor.fetchall()


def vector_candidates_fetch(sql: str, params: dict[str, Any]) -> list[tuple[int, float]]:
    """Runs a vector_candidates statement on Django's connection (in the caller's transaction, if
    any) with server-side binding, prepared once per connection and statement: (chunk id, cosine
    similarity) nearest first."""
    rows = _statement_run(sql, params, prepare=True)
    return [(int(chunk_id), 1 - float(distance)) for chunk_id, distance in rows]


def vector_candidates_explain(sql: str, params: dict[str, Any]) -> str:
    """PostgreSQL's plan for a vector_candidates statement, bound as a search binds it."""
    return "\n".join(str(row[0]) for row in _statement_run("EXPLAIN " + sql, params, prepare=False))


def _vector_list(
    *, embedding_set: EmbeddingSet, vector: list[float], filters: Mapping[str, Any], limit: int
) -> tuple[list[tuple[int, float]], str]:
    """(chunk id, cosine similarity) nearest first, and the plan that found them. Runs inside the
    caller's transaction (SET LOCAL)."""
    plan = search_plan(embedding_set=embedding_set, filters=filters, wanted=limit)
    if plan.method == "hnsw":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(plan.ef_search)])
        found = vector_candidates_fetch(
            *vector_candidates(embedding_set=embedding_set, vector=vector, filters=filters, method="hnsw", limit=limit)
        )
        if len(found) >= limit:
            return found, "hnsw"
        # The filter kept fewer of the index's candidates than needed (no iterative scans in 0.6.2).
        fell_back = True
    else:
        fell_back = False
    found = vector_candidates_fetch(
        *vector_candidates(embedding_set=embedding_set, vector=vector, filters=filters, method="exact", limit=limit)
    )
    return found, "hnsw+exact" if fell_back else "exact"


# -- full text -----------------------------------------------------------------------------------------

TEXT_CONFIG = "english"


def _text_list(
    *,
    knowledge_base: KnowledgeBase,
    embedding_set: EmbeddingSet | None,
    query: str,
    filters: Mapping[str, Any],
    limit: int,
) -> list[tuple[int, float]]:
    """(chunk id, ts_rank_cd) best first: `websearch_to_tsquery('english', query)` over the chunks'
    search vectors (GIN). Only chunks with a vector in the active set are searchable, as for the
    vector list: a document still being ingested shows up in neither."""
    tsquery = SearchQuery(query, search_type="websearch", config=TEXT_CONFIG)
    chunks = Chunk.objects.filter(knowledge_base=knowledge_base, search_vector=tsquery)
    if embedding_set is not None:
        chunks = chunks.filter(
            Exists(ChunkEmbedding.objects.filter(embedding_set_id=embedding_set.pk, chunk_id=OuterRef("pk")))
        )
    if filters:
        chunks = chunks.filter(document__metadata__contains=dict(filters))
    ranked = (
        chunks.annotate(rank=SearchRank(F("search_vector"), tsquery, cover_density=True))
        .order_by("-rank", "pk")
        .values_list("pk", "rank")[:limit]
    )
    return [(chunk_id, float(rank)) for chunk_id, rank in ranked]


# -- highlighting ---------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+")  # a fixed pattern: user text is never compiled


def _query_terms(query: str) -> list[str]:
    """The query's words as PostgreSQL's English configuration keeps them (stems, no stop words)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT tsvector_to_array(to_tsvector(%s::regconfig, %s))", [TEXT_CONFIG, query])
        row = cursor.fetchone()
    terms = sorted({term for term in (row[0] if row else None) or [] if len(term) >= 2}, key=len, reverse=True)
    return terms[:MAX_MATCH_TERMS]


class TermMatcher:
    """Whether a word matches one of the query's terms: a stem is a prefix of the words it stands
    for ("refund" of "refunds"), or the word less its last letter is a prefix of the stem ("policy"
    -> "polic" of "polici"). Built once per search, so each word costs one C-level `startswith` over
    the terms and one set lookup, not a loop over the terms."""

    def __init__(self, terms: Iterable[str]) -> None:
        self.terms = tuple(terms)
        # Bounded: at most MAX_MATCH_TERMS x MAX_STEM_PREFIX strings, however long a term is.
        self.stem_prefixes = frozenset(
            term[:n] for term in self.terms for n in range(3, min(len(term), MAX_STEM_PREFIX) + 1)
        )

    def __bool__(self) -> bool:
        return bool(self.terms)

    def matches(self, word: str) -> bool:
        lowered = word.lower()
        return lowered.startswith(self.terms) or (len(lowered) >= 4 and lowered[:-1] in self.stem_prefixes)


def text_matches(text: str, terms: TermMatcher) -> list[tuple[int, int]]:
    """[start, end) character offsets in `text` of the words matching the query's terms, bounded."""
    if not terms:
        return []
    found: list[tuple[int, int]] = []
    for word in _WORD.finditer(text):
        if terms.matches(word.group()):
            found.append((word.start(), word.end()))
            if len(found) >= MAX_MATCHES_PER_HIT:
                break
    return found


# -- the search ----------------------------------------------------------------------------------------


def _fused(lists: list[list[tuple[int, float]]]) -> dict[int, float]:
    scores: dict[int, float] = {}
    for ranked in lists:
        for rank, (chunk_id, _) in enumerate(ranked, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
    return scores


def knowledge_search(
    *,
    organization: Organization,
    principal: Principal,
    knowledge_base: KnowledgeBase,
    query: str,
    top_k: int = 5,
    mode: Mode = "hybrid",
    filters: Mapping[str, str | int | float | bool] | None = None,
    request_id: str,
) -> SearchResults:
    """The knowledge base's `top_k` chunks best matching the query, best first. The connection is on
    the organization's schema. Raises KnowledgeSearchInvalid (400) for a request out of bounds and
    LlmRefusal for an embedding the engine refuses (budget, rate limit, no model)."""
    query, top_k, chosen_mode, checked = _request_check(query=query, top_k=top_k, mode=mode, filters=filters)
    embedding_set = knowledge_base.active_set
    if embedding_set is not None:
        embedding_set.knowledge_base = knowledge_base
    wanted = top_k if chosen_mode != "hybrid" else min(max(top_k * HYBRID_CANDIDATE_FACTOR, 20), 150)
    cost, model, vector = Decimal(0), None, None
    if chosen_mode != "text" and embedding_set is not None:
        # The provider call first, with no transaction open.
        vector, cost, model = _query_embed(
            organization=organization,
            principal=principal,
            embedding_set=embedding_set,
            query=query,
            request_id=request_id,
        )
    vector_list: list[tuple[int, float]] = []
    text_list: list[tuple[int, float]] = []
    plan = None
    with transaction.atomic():
        if vector is not None and embedding_set is not None:
            vector_list, plan = _vector_list(embedding_set=embedding_set, vector=vector, filters=checked, limit=wanted)
        if chosen_mode != "vector":
            text_list = _text_list(
                knowledge_base=knowledge_base, embedding_set=embedding_set, query=query, filters=checked, limit=wanted
            )
        similarity = dict(vector_list)
        ranks = dict(text_list)
        if chosen_mode == "hybrid":
            fused = _fused([vector_list, text_list])
            order = sorted(fused, key=lambda chunk_id: (-fused[chunk_id], chunk_id))[:top_k]
            scores = {chunk_id: fused[chunk_id] for chunk_id in order}
        else:
            chosen = vector_list if chosen_mode == "vector" else text_list
            order = [chunk_id for chunk_id, _ in chosen[:top_k]]
            scores = dict(chosen)
        chunks = (
            Chunk.objects.select_related("document")
            .only("id", "ordinal", "text", "heading_path", "document__id", "document__title")
            .in_bulk(order)
        )
        terms = TermMatcher(_query_terms(query))
    hits = [
        Hit(
            chunk_id=chunk.pk,
            document_id=chunk.document.pk,
            document_title=chunk.document.title,
            ordinal=chunk.ordinal,
            heading_path=chunk.heading_path,
            text=chunk.text,
            score=round(scores[chunk_id], 6),
            vector_score=round(similarity[chunk_id], 6) if chunk_id in similarity else None,
            text_rank=round(ranks[chunk_id], 6) if chunk_id in ranks else None,
            matches=text_matches(chunk.text, terms),
        )
        for chunk_id in order
        if (chunk := chunks.get(chunk_id)) is not None
    ]
    return SearchResults(hits=hits, cost_usd=cost, model=model, mode=chosen_mode, plan=plan)
