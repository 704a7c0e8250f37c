"""Knowledge search, for workflow `retrieve` steps and agents with documents: the query is embedded
through the governed embeddings path (budgeted, in the ledger), then the organization's chunks are
ordered by cosine distance (the HNSW index)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pgvector.django import CosineDistance

from apps.accounts.principals import Principal
from apps.knowledge.models import DEFAULT_DIMENSIONS as EMBEDDING_DIMENSIONS
from apps.knowledge.models import Chunk
from apps.llm.calls import CallSource, LlmRefusal, embedding_model_name, embeddings_create
from apps.tenants.models import Organization


@dataclass(frozen=True)
class Found:
    chunks: list[dict[str, Any]]
    cost_usd: Decimal
    model: str


def query_embed(
    *, organization: Organization, principal: Principal, text: str, request_id: str
) -> tuple[list[float], Decimal, str]:
    model = embedding_model_name()
    if model is None:
        raise LlmRefusal(503, "no_embedding_model", "no embedding model is available for retrieval", retryable=True)
    outcome = embeddings_create(
        organization=organization,
        principal=principal,
        body={"model": model, "input": text, "encoding_format": "float"},
        request_id=request_id,
        source=CallSource.RETRIEVAL,
    )
    vector = (outcome.body.get("data") or [{}])[0].get("embedding")
    if not isinstance(vector, list) or len(vector) != EMBEDDING_DIMENSIONS:
        raise LlmRefusal(
            502, "embedding_mismatch", f"{model} does not give {EMBEDDING_DIMENSIONS} floats", retryable=True
        )
    return vector, outcome.cost_usd, model


def chunks_search(
    *,
    organization: Organization,
    principal: Principal,
    query: str,
    top_k: int,
    document_ids: list[int] | None,
    request_id: str,
) -> Found:
    """The `top_k` chunks nearest to the query (optionally among some documents), best first."""
    vector, cost, model = query_embed(organization=organization, principal=principal, text=query, request_id=request_id)
    chunks = Chunk.objects.filter(embedding__isnull=False).select_related("document")
    if document_ids:
        chunks = chunks.filter(document_id__in=document_ids)
    nearest = chunks.annotate(distance=CosineDistance("embedding", vector)).order_by("distance")[:top_k]
    return Found(
        chunks=[
            {
                "text": chunk.text,
                "document_id": chunk.document_id,
                "document_title": chunk.document.title,
                "ordinal": chunk.ordinal,
                "score": round(1 - float(chunk.distance), 6),
            }
            for chunk in nearest
        ],
        cost_usd=cost,
        model=model,
    )
