"""Reads of knowledge bases and documents (apps.knowledge.search answers queries)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from apps.knowledge.models import Chunk, Document, EmbeddingSet, KnowledgeBase
from apps.tenants.models import Organization
from apps.work.models import UNFINISHED
from cognitionos.refusals import Refusal


class KnowledgeNotFound(Refusal):
    """No such knowledge base or document in this organization (404)."""

    http_status = 404

    def __init__(self, message: str, *, code: str = "not_found") -> None:
        super().__init__(message)
        self.code = code


def _count(queryset: QuerySet[Any]) -> Subquery:
    return Subquery(
        queryset.order_by().values("knowledge_base").annotate(n=Count("pk")).values("n"),
        output_field=IntegerField(),
    )


def knowledge_bases_counted(*, organization: Organization) -> QuerySet[KnowledgeBase]:
    """The organization's knowledge bases, unordered, each with `document_count` and `chunk_count`
    and `active_set` loaded: the API's cursor pages order it themselves."""
    return KnowledgeBase.objects.select_related("active_set").annotate(
        document_count=Coalesce(_count(Document.objects.filter(knowledge_base=OuterRef("pk"))), Value(0)),
        chunk_count=Coalesce(_count(Chunk.objects.filter(knowledge_base=OuterRef("pk"))), Value(0)),
    )


def knowledge_bases_list(*, organization: Organization) -> list[KnowledgeBase]:
    """The organization's knowledge bases by name, each with `document_count` and `chunk_count`
    (one query), and `active_set` and `building_set` (the set being built, or None) loaded."""
    bases: list[KnowledgeBase] = list(knowledge_bases_counted(organization=organization).order_by("name"))
    building = {
        found.knowledge_base_id: found
        for found in EmbeddingSet.objects.filter(knowledge_base__in=bases, status__in=UNFINISHED)
    }
    for base in bases:
        base.building_set = building.get(base.pk)  # type: ignore[attr-defined]
    return bases


def _uuid(value: Any) -> UUID | None:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        return None


def knowledge_base_get(*, organization: Organization, knowledge_base_id: Any) -> KnowledgeBase:
    """One knowledge base of the organization (with `document_count`, `chunk_count` and
    `building_set`, as in the list), or KnowledgeNotFound."""
    key = _uuid(knowledge_base_id)
    base = (
        KnowledgeBase.objects.select_related("active_set")
        .annotate(
            document_count=Coalesce(_count(Document.objects.filter(knowledge_base=OuterRef("pk"))), Value(0)),
            chunk_count=Coalesce(_count(Chunk.objects.filter(knowledge_base=OuterRef("pk"))), Value(0)),
        )
        .filter(pk=key)
        .first()
        if key is not None
        else None
    )
    if base is None:
        raise KnowledgeNotFound("no such knowledge base", code="knowledge_base_not_found")
    base.building_set = EmbeddingSet.objects.filter(  # type: ignore[attr-defined]
        knowledge_base=base, status__in=UNFINISHED
    ).first()
    return base


def documents_list(
    *,
    knowledge_base: KnowledgeBase,
    status: str | None = None,
    before: tuple[Any, Any] | None = None,
    limit: int = 50,
) -> list[Document]:
    """A page of the knowledge base's documents, newest first (keyset: `before` is the last row's
    (created_at, id)), optionally of one work status. Never the uploaded bytes."""
    documents = Document.objects.filter(knowledge_base=knowledge_base).defer("metadata")
    if status:
        documents = documents.filter(status=status)
    if before is not None:
        created_at, key = before
        documents = documents.filter(created_at__lte=created_at).exclude(created_at=created_at, id__gte=key)
    return list(documents.order_by("-created_at", "-id")[: max(1, min(limit, 200))])


def document_get(*, knowledge_base: KnowledgeBase, document_id: Any) -> Document:
    """One document of the knowledge base, or KnowledgeNotFound."""
    key = _uuid(document_id)
    document = Document.objects.filter(knowledge_base=knowledge_base, pk=key).first() if key is not None else None
    if document is None:
        raise KnowledgeNotFound("no such document", code="document_not_found")
    return document


def document_progress(document: Document) -> dict[str, Any]:
    """What a client following the document's ingestion sees (status, stage, counts, error)."""
    return {
        "id": str(document.pk),
        "status": document.status,
        "stage": document.stage,
        "chunk_count": document.chunk_count,
        "embedded_count": document.embedded_count,
        "error_class": document.error_class or None,
        "error_message": document.error_message or None,
        "cost_usd": str(document.cost_usd),
    }


def embedding_set_progress(embedding_set: EmbeddingSet) -> dict[str, Any]:
    """What a client following a re-embedding sees: status, counts of chunks embedded and to embed."""
    from apps.knowledge.models import ChunkEmbedding

    total = Chunk.objects.filter(knowledge_base_id=embedding_set.knowledge_base_id).count()
    done = ChunkEmbedding.objects.filter(embedding_set=embedding_set).count()
    return {
        "id": embedding_set.pk,
        "status": embedding_set.status,
        "embedding_model": embedding_set.embedding_model,
        "dimensions": embedding_set.dimensions,
        "chunk_count": total,
        "embedded_count": done,
        "active": embedding_set.activated_at is not None,
        "error_class": embedding_set.error_class or None,
        "error_message": embedding_set.error_message or None,
    }
