"""Knowledge rows for tests, written directly (no ingestion, no provider): a knowledge base with an
active embedding set, documents, chunks with their full-text vector and, if given, their vector in
the active set. The connection must be on the organization's schema."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from typing import Any

from django.contrib.postgres.search import SearchVector
from django.db.models import Value
from django.utils import timezone

from apps.knowledge.models import Chunk, ChunkEmbedding, Document, EmbeddingSet, KnowledgeBase
from cognitionos.redis import redis_client

SIMULATED_MODEL = "simulated-embedding"


def embedding_set_make(
    knowledge_base: KnowledgeBase, *, model: str = SIMULATED_MODEL, dimensions: int | None = None, activate: bool = True
) -> EmbeddingSet:
    """A built (succeeded) set of the knowledge base, made its active set if `activate`."""
    now = timezone.now()
    embedding_set = EmbeddingSet.objects.create(
        knowledge_base=knowledge_base,
        embedding_model=model,
        dimensions=dimensions or knowledge_base.dimensions,
        status="succeeded",
        finished_at=now,
        activated_at=now if activate else None,
        principal_kind="system",
        principal_label="tests",
    )
    if activate:
        knowledge_base.active_set = embedding_set
        knowledge_base.save(update_fields=["active_set"])
    return embedding_set


def knowledge_base_make(
    *, name: str = "Handbook", dimensions: int = 256, model: str = SIMULATED_MODEL
) -> KnowledgeBase:
    knowledge_base = KnowledgeBase.objects.create(name=name, embedding_model=model, dimensions=dimensions)
    embedding_set_make(knowledge_base, model=model, dimensions=dimensions)
    return knowledge_base


def document_make(
    knowledge_base: KnowledgeBase, *, title: str = "Policies", metadata: dict[str, Any] | None = None
) -> Document:
    return Document.objects.create(
        knowledge_base=knowledge_base,
        title=title,
        filename=f"{title}.txt",
        content_type="text/plain",
        size_bytes=0,
        sha256=hashlib.sha256(title.encode()).hexdigest(),
        metadata=metadata or {},
        stage="indexed",
        status="succeeded",
        finished_at=timezone.now(),
        principal_kind="system",
        principal_label="tests",
    )


def chunk_make(
    document: Document,
    *,
    ordinal: int,
    text: str,
    vector: Sequence[float] | None = None,
    heading_path: str = "",
    embedding_set: EmbeddingSet | None = None,
) -> Chunk:
    """A chunk of the document; with `vector`, its vector in `embedding_set` (default: the active one)."""
    chunk = Chunk.objects.create(
        document=document,
        knowledge_base_id=document.knowledge_base_id,
        ordinal=ordinal,
        text=text,
        heading_path=heading_path,
        token_estimate=len(text.encode()) // 3 + 1,
    )
    Chunk.objects.filter(pk=chunk.pk).update(
        search_vector=SearchVector(Value(heading_path), weight="A", config="english")
        + SearchVector(Value(text), weight="B", config="english")
    )
    Document.objects.filter(pk=document.pk).update(chunk_count=ordinal + 1)
    if vector is not None:
        vector_add(chunk, vector, embedding_set=embedding_set)
    return chunk


def vector_add(chunk: Chunk, vector: Sequence[float], *, embedding_set: EmbeddingSet | None = None) -> ChunkEmbedding:
    target = embedding_set or KnowledgeBase.objects.get(pk=chunk.knowledge_base_id).active_set
    assert target is not None, "the knowledge base has no active set"
    return ChunkEmbedding.objects.create(
        embedding_set=target, chunk=chunk, dimensions=len(vector), embedding=list(vector)
    )


def simulated_embedding(text: str, dimensions: int) -> list[float]:
    """What the simulator's embedding model answers for `text` (apps.llm.providers.SimulatorProvider)."""
    generator = random.Random(hashlib.sha256(text.encode()).digest())
    vector = [generator.gauss(0, 1) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def near(vector: Sequence[float], *, similarity: float, seed: int) -> list[float]:
    """A unit vector whose cosine similarity to (unit) `vector` is `similarity`."""
    generator = random.Random(seed)
    noise = [generator.gauss(0, 1) for _ in vector]
    along = sum(a * b for a, b in zip(noise, vector, strict=True))
    orthogonal = [n - along * v for n, v in zip(noise, vector, strict=True)]
    norm = math.sqrt(sum(o * o for o in orthogonal)) or 1.0
    side = math.sqrt(max(0.0, 1 - similarity**2))
    return [similarity * v + side * o / norm for v, o in zip(vector, orthogonal, strict=True)]


def llm_rate_limits_forget() -> None:
    """Empty the engine's per-minute counters (shared Redis): tests that embed many queries would
    otherwise meet the organization's limit left by the tests before them."""
    client = redis_client()
    for key in client.scan_iter(match="*llm:rl:*"):
        client.delete(key)
