"""Knowledge bases and their documents: every write (create, change, delete; upload, cancel,
resume), validated, atomic and audited. Ingestion and re-embedding run as durable work
(apps.knowledge.ingestion, apps.work); these functions queue them."""

from __future__ import annotations

import hashlib
import math
import os
import re
import unicodedata
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models.functions import Lower
from django.utils import timezone

from apps.accounts.principals import Principal
from apps.audit.services import audit_record
from apps.billing.selectors import EntitlementRefused, entitlement
from apps.knowledge import ingestion
from apps.knowledge.models import (
    DEFAULT_CHUNK_OVERLAP_TOKENS,
    DEFAULT_CHUNK_TOKENS,
    DEFAULT_DIMENSIONS,
    MAX_CHUNK_TOKENS,
    MIN_CHUNK_TOKENS,
    SUPPORTED_DIMENSIONS,
    Chunk,
    ChunkEmbedding,
    Document,
    DocumentStage,
    DocumentUpload,
    EmbeddingSet,
    KnowledgeBase,
)
from apps.knowledge.parsing import CONTENT_TYPES, ParseError, document_sniff
from apps.llm.calls import embedding_model_dimensions, embedding_model_name
from apps.tenants.models import Organization
from apps.work.models import UNFINISHED, WorkStatus
from apps.work.principals import principal_fields
from apps.work.services import work_admit, work_finish, work_requeue
from cognitionos.refusals import Refusal

# Without a plan limit (unlimited plans), a document is still bounded by this.
MAX_DOCUMENT_BYTES = 50 * 1024 * 1024
MAX_METADATA_KEYS = 20
MAX_METADATA_VALUE_CHARACTERS = 200
METADATA_KEY = re.compile(r"[a-z0-9_]{1,40}")
# Refusals of the file itself: resuming can't help, a new upload can.
PERMANENT_ERRORS = frozenset(
    {"document_empty", "unsupported_type", "not_utf8_text", "encrypted_pdf", "broken_pdf", "broken_html",
     "document_too_long", "document_too_large", "too_many_chunks"}
)  # fmt: skip


class KnowledgeInvalid(Refusal):
    """The request is wrong (400); `param` names the field."""

    http_status = 400

    def __init__(self, message: str, *, param: str | None = None, code: str = "invalid") -> None:
        super().__init__(message)
        self.param, self.code = param, code


class KnowledgeConflict(Refusal):
    """The name is taken, or the document is not in a state for that action (409)."""

    http_status = 409

    def __init__(self, message: str, *, code: str = "conflict", param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.param = code, param


class KnowledgeTooLarge(Refusal):
    """The document is larger than the plan allows (413)."""

    http_status = 413
    code = "document_too_large"

    def __init__(self, message: str, *, limit_bytes: int, size_bytes: int) -> None:
        super().__init__(message)
        self.param = "file"
        self.details = {"limit_bytes": limit_bytes, "size_bytes": size_bytes}


# -- limits -----------------------------------------------------------------------------------------


def document_bytes_limit(organization: Organization) -> int:
    """The largest document the organization's plan accepts, in bytes."""
    limit = entitlement(organization, "knowledge_document_bytes").limit
    return MAX_DOCUMENT_BYTES if limit is None else min(int(limit), MAX_DOCUMENT_BYTES)


def chunks_used(organization: Organization) -> int:
    """Chunks the organization stores now (every knowledge base of its schema)."""
    return Chunk.objects.count()


def chunks_require(organization: Organization, *, adding: int) -> None:
    """EntitlementRefused (403) unless `adding` more chunks stay within the plan's limit."""
    if entitlement(organization, "knowledge_chunks").limit is None:
        return  # unlimited: nothing to count
    found = entitlement(organization, "knowledge_chunks", used=chunks_used(organization), adding=adding)
    if not found.allowed:
        raise EntitlementRefused(found)


# -- knowledge bases --------------------------------------------------------------------------------


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise KnowledgeInvalid("a knowledge base needs a name", param="name")
    name = " ".join(value.split())
    if len(name) > 100:
        raise KnowledgeInvalid("the name is longer than 100 characters", param="name")
    return name


def _description(value: Any) -> str:
    if not isinstance(value, str):
        raise KnowledgeInvalid("the description must be text", param="description")
    description = value.strip()
    if len(description) > 500:
        raise KnowledgeInvalid("the description is longer than 500 characters", param="description")
    return description


def _name_free(name: str, *, other_than: Any = None) -> None:
    taken = KnowledgeBase.objects.annotate(lower=Lower("name")).filter(lower=name.lower())
    if other_than is not None:
        taken = taken.exclude(pk=other_than)
    if taken.exists():
        raise KnowledgeConflict(f"a knowledge base named {name!r} exists", code="name_taken", param="name")


def embedding_choice(model: str | None, dimensions: int | None) -> tuple[str, int]:
    """The embedding model and dimension count a knowledge base asks for, checked: the model is an
    embedding model of the catalog, the count is supported (an HNSW index per count; pgvector 0.6.2
    indexes at most 2,000) and the model gives it natively or reduces to it (text-embedding-3's
    `dimensions` parameter)."""
    if model is None:
        model = embedding_model_name()
        if model is None:
            raise KnowledgeInvalid(
                "no embedding model is available", param="embedding_model", code="no_embedding_model"
            )
    if not isinstance(model, str) or not model:
        raise KnowledgeInvalid("the embedding model must be a model name", param="embedding_model")
    native = embedding_model_dimensions(model)
    if native is None:
        raise KnowledgeInvalid(
            f"{model!r} is not an embedding model of the catalog", param="embedding_model", code="model_not_found"
        )
    if dimensions is None:
        dimensions = native if native in SUPPORTED_DIMENSIONS else min(DEFAULT_DIMENSIONS, native)
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions not in SUPPORTED_DIMENSIONS:
        supported = ", ".join(str(n) for n in SUPPORTED_DIMENSIONS)
        raise KnowledgeInvalid(f"dimensions must be one of {supported}", param="dimensions")
    if dimensions > native:
        raise KnowledgeInvalid(f"{model} gives {native} dimensions; ask for at most that", param="dimensions")
    if dimensions != native and not ingestion.reducible(model):
        raise KnowledgeInvalid(
            f"{model} gives {native} dimensions and can't reduce them; "
            f"ask for {native} or use a text-embedding-3 model",
            param="dimensions",
        )
    return model, dimensions


def _chunking(chunk_tokens: int | None, overlap: int | None) -> tuple[int, int]:
    tokens = DEFAULT_CHUNK_TOKENS if chunk_tokens is None else chunk_tokens
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not MIN_CHUNK_TOKENS <= tokens <= MAX_CHUNK_TOKENS:
        raise KnowledgeInvalid(
            f"chunk_tokens must be between {MIN_CHUNK_TOKENS} and {MAX_CHUNK_TOKENS}", param="chunk_tokens"
        )
    overlap = min(DEFAULT_CHUNK_OVERLAP_TOKENS, tokens // 2) if overlap is None else overlap
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap <= tokens // 2:
        raise KnowledgeInvalid(
            "chunk_overlap_tokens must be between 0 and half of chunk_tokens", param="chunk_overlap_tokens"
        )
    return tokens, overlap


@transaction.atomic
def knowledge_base_create(
    *,
    organization: Organization,
    principal: Principal,
    name: str,
    description: str = "",
    embedding_model: str | None = None,
    dimensions: int | None = None,
    chunk_tokens: int | None = None,
    chunk_overlap_tokens: int | None = None,
) -> KnowledgeBase:
    """A knowledge base, with its first embedding set (empty, so built at once: succeeded and active)."""
    name = _name(name)
    description = _description(description)
    model, dimensions = embedding_choice(embedding_model, dimensions)
    tokens, overlap = _chunking(chunk_tokens, chunk_overlap_tokens)
    _name_free(name)
    try:
        with transaction.atomic():
            base = KnowledgeBase.objects.create(
                name=name,
                description=description,
                embedding_model=model,
                dimensions=dimensions,
                chunk_tokens=tokens,
                chunk_overlap_tokens=overlap,
                created_by_id=principal.id or "",
                created_by_label=principal.label[:254],
            )
    except IntegrityError:  # created meanwhile by another request
        raise KnowledgeConflict(f"a knowledge base named {name!r} exists", code="name_taken", param="name") from None
    now = timezone.now()
    first = EmbeddingSet.objects.create(
        knowledge_base=base,
        embedding_model=model,
        dimensions=dimensions,
        status=WorkStatus.SUCCEEDED,
        finished_at=now,
        activated_at=now,
        **principal_fields(principal),
    )
    base.active_set = first
    base.save(update_fields=["active_set"])
    audit_record(
        organization=organization,
        actor=principal,
        action="knowledge_base.created",
        target=base,
        metadata={"embedding_model": model, "dimensions": dimensions, "chunk_tokens": tokens},
    )
    return base


def _set_building(base: KnowledgeBase) -> EmbeddingSet | None:
    return EmbeddingSet.objects.filter(knowledge_base=base, status__in=UNFINISHED).first()


def _set_start(base: KnowledgeBase, model: str, dimensions: int, principal: Principal) -> EmbeddingSet:
    """A set to build for (model, dimensions): a build of it that failed (a budget refusal) is
    queued again and keeps what it embedded; otherwise a new one."""
    stopped = (
        EmbeddingSet.objects.filter(
            knowledge_base=base,
            embedding_model=model,
            dimensions=dimensions,
            status=WorkStatus.FAILED,
            activated_at__isnull=True,
        )
        .order_by("-pk")
        .first()
    )
    if stopped is None:
        return EmbeddingSet.objects.create(
            knowledge_base=base, embedding_model=model, dimensions=dimensions, **principal_fields(principal)
        )
    work_requeue(kind=ingestion.EMBEDDING_SET, item=stopped, values=principal_fields(principal))
    return stopped


def _embedding_change(
    organization: Organization,
    principal: Principal,
    base: KnowledgeBase,
    embedding_model: str | None,
    dimensions: int | None,
) -> tuple[dict[str, Any], EmbeddingSet | None]:
    """The base's new embedding fields, and the set to build for them (None: nothing to build)."""
    model, count = embedding_choice(
        embedding_model or base.embedding_model,
        dimensions if dimensions is not None else (None if embedding_model else base.dimensions),
    )
    rebuild: EmbeddingSet | None = None
    building = _set_building(base)
    if building is not None and (building.embedding_model, building.dimensions) != (model, count):
        ingestion.embedding_set_abandon(organization=organization, embedding_set=building, reason=principal.label)
        building = None
    active = base.active_set
    if building is None and (active is None or (active.embedding_model, active.dimensions) != (model, count)):
        rebuild = _set_start(base, model, count, principal)
    if (model, count) == (base.embedding_model, base.dimensions):
        return {}, rebuild
    return {"embedding_model": model, "dimensions": count}, rebuild


@transaction.atomic
def knowledge_base_update(
    *,
    organization: Organization,
    principal: Principal,
    knowledge_base: KnowledgeBase,
    name: str | None = None,
    description: str | None = None,
    embedding_model: str | None = None,
    dimensions: int | None = None,
) -> KnowledgeBase:
    """Rename or describe a knowledge base, or change its embedding model or dimension count: then a
    new embedding set is built in the background (every chunk embedded again) while search answers
    from the active set, which is switched when the new one is complete. A change while one is being
    built cancels that build; changing back to the active set's model just cancels it."""
    base = KnowledgeBase.objects.select_for_update().get(pk=knowledge_base.pk)
    changed: dict[str, Any] = {}
    if name is not None:
        name = _name(name)
        if name != base.name:
            _name_free(name, other_than=base.pk)
            changed["name"] = name
    if description is not None:
        description = _description(description)
        if description != base.description:
            changed["description"] = description
    rebuild: EmbeddingSet | None = None
    if embedding_model is not None or dimensions is not None:
        embedding, rebuild = _embedding_change(organization, principal, base, embedding_model, dimensions)
        changed.update(embedding)
    if not changed and rebuild is None:
        return base
    for field_name, value in changed.items():
        setattr(base, field_name, value)
    try:
        with transaction.atomic():
            if changed:
                base.save(update_fields=list(changed))
    except IntegrityError:
        raise KnowledgeConflict(f"a knowledge base named {name!r} exists", code="name_taken", param="name") from None
    audit_record(
        organization=organization,
        actor=principal,
        action="knowledge_base.updated",
        target=base,
        metadata={
            "fields": sorted(changed),
            **({"reembedding_set": rebuild.pk} if rebuild is not None else {}),
            **({"embedding_model": base.embedding_model, "dimensions": base.dimensions} if rebuild else {}),
        },
    )
    if rebuild is not None:
        work_admit(organization=organization, kind=ingestion.EMBEDDING_SET, waiting=True)
    return base


def _table(model: Any) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _contents_delete(*, documents_where: str, params: list[Any]) -> None:
    """Vectors, chunks and uploads of the documents matched, in set-based statements (a knowledge
    base of 100,000 chunks is not loaded into memory to cascade). The caller deletes the documents."""
    documents = f"SELECT id FROM {_table(Document)} WHERE {documents_where}"  # noqa: S608
    chunks = f"SELECT id FROM {_table(Chunk)} WHERE document_id IN ({documents})"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {_table(ChunkEmbedding)} WHERE chunk_id IN ({chunks})", params)  # noqa: S608
        cursor.execute(f"DELETE FROM {_table(Chunk)} WHERE document_id IN ({documents})", params)  # noqa: S608
        cursor.execute(f"DELETE FROM {_table(DocumentUpload)} WHERE document_id IN ({documents})", params)  # noqa: S608


@transaction.atomic
def knowledge_base_delete(*, organization: Organization, principal: Principal, knowledge_base: KnowledgeBase) -> None:
    """Delete a knowledge base and everything in it: documents, chunks, vectors, embedding sets.
    Ingestion still running for it finds its rows gone and stops."""
    base = KnowledgeBase.objects.select_for_update().filter(pk=knowledge_base.pk).first()
    if base is None:
        return
    # Its documents next (the lock order of ingestion: base, document, set, chunks), so a batch
    # being stored for one of them finishes first.
    locked = list(Document.objects.select_for_update().filter(knowledge_base=base).values_list("pk", flat=True))
    counts = {
        "documents": len(locked),
        "chunks": Chunk.objects.filter(knowledge_base=base).count(),
    }
    audit_record(
        organization=organization,
        actor=principal,
        action="knowledge_base.deleted",
        target=base,
        metadata=counts,
    )
    _contents_delete(documents_where="knowledge_base_id = %s", params=[base.pk])
    KnowledgeBase.objects.filter(pk=base.pk).update(active_set=None)
    Document.objects.filter(knowledge_base=base).delete()
    EmbeddingSet.objects.filter(knowledge_base=base).delete()
    base.delete()


# -- documents --------------------------------------------------------------------------------------


def _filename(value: Any) -> str:
    if not isinstance(value, str):
        raise KnowledgeInvalid("the file needs a name", param="file")
    name = os.path.basename(value.replace("\\", "/"))
    name = "".join(ch for ch in unicodedata.normalize("NFC", name) if unicodedata.category(ch)[0] != "C").strip()
    if not name:
        raise KnowledgeInvalid("the file needs a name", param="file")
    if len(name) > 255:
        stem, extension = os.path.splitext(name)
        name = stem[: 255 - len(extension)] + extension
    return name


def _title(value: Any, filename: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return os.path.splitext(filename)[0][:300] or filename[:300]
    if not isinstance(value, str):
        raise KnowledgeInvalid("the title must be text", param="title")
    title = " ".join(value.split())
    if len(title) > 300:
        raise KnowledgeInvalid("the title is longer than 300 characters", param="title")
    return title


def metadata_clean(value: Any) -> dict[str, str | int | float | bool]:
    """A document's metadata, as search filters it: at most 20 keys of [a-z0-9_]{1,40}, each a
    string (200 characters at most), a number or a boolean."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise KnowledgeInvalid("metadata must be an object", param="metadata")
    if len(value) > MAX_METADATA_KEYS:
        raise KnowledgeInvalid(f"metadata has more than {MAX_METADATA_KEYS} keys", param="metadata")
    clean: dict[str, str | int | float | bool] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not METADATA_KEY.fullmatch(key):
            raise KnowledgeInvalid(
                f"metadata key {str(key)[:50]!r} must be 1-40 characters of a-z, 0-9 and _", param="metadata"
            )
        if isinstance(item, str):
            if len(item) > MAX_METADATA_VALUE_CHARACTERS:
                raise KnowledgeInvalid(
                    f"metadata {key!r} is longer than {MAX_METADATA_VALUE_CHARACTERS} characters", param="metadata"
                )
        elif isinstance(item, bool | int):
            if not isinstance(item, bool) and abs(item) > 2**53:
                raise KnowledgeInvalid(f"metadata {key!r} is too large a number", param="metadata")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise KnowledgeInvalid(f"metadata {key!r} must be a finite number", param="metadata")
        else:
            raise KnowledgeInvalid(f"metadata {key!r} must be a string, a number or a boolean", param="metadata")
        clean[key] = item
    return clean


@transaction.atomic
def document_upload(
    *,
    organization: Organization,
    principal: Principal,
    knowledge_base: KnowledgeBase,
    filename: str,
    content_type: str | None,
    content: bytes,
    title: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Document:
    """Accept a file into a knowledge base and queue its ingestion. Refused at once (nothing stored):
    over the plan's size (413), empty, of an unsupported type, or text that is not UTF-8 (400), or
    the organization at its plan's chunk limit (403). A file that passes these checks but can't be
    read (an encrypted or broken PDF) fails in ingestion, with its reason."""
    filename = _filename(filename)
    title = _title(title, filename)
    clean_metadata = metadata_clean(metadata)
    if not isinstance(content, bytes | bytearray | memoryview):
        raise KnowledgeInvalid("the file has no content", param="file")
    content = bytes(content)
    limit = document_bytes_limit(organization)
    if len(content) > limit:
        raise KnowledgeTooLarge(
            f"the file is {len(content):,} bytes; your plan accepts documents of up to {limit:,} bytes",
            limit_bytes=limit,
            size_bytes=len(content),
        )
    try:
        kind = document_sniff(filename=filename, content_type=content_type, content=content)
    except ParseError as exc:
        raise KnowledgeInvalid(str(exc), param="file", code=exc.code) from None
    chunks_require(organization, adding=1)
    # A key-share lock: a concurrent delete of the base waits for this upload (and deletes it too);
    # uploads into one base don't wait for each other.
    if not ingestion.row_lock(KnowledgeBase, knowledge_base.pk, "KEY SHARE"):
        raise KnowledgeConflict("the knowledge base was deleted", code="knowledge_base_gone")
    base = knowledge_base
    document = Document.objects.create(
        knowledge_base=base,
        title=title,
        filename=filename,
        content_type=CONTENT_TYPES[kind],
        size_bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        metadata=clean_metadata,
        **principal_fields(principal),
    )
    DocumentUpload.objects.create(document=document, content=content)
    audit_record(
        organization=organization,
        actor=principal,
        action="knowledge_document.uploaded",
        target=document,
        metadata={
            "knowledge_base": str(base.pk),
            "filename": filename,
            "content_type": document.content_type,
            "size_bytes": len(content),
        },
    )
    ingestion.document_progress_publish(organization=organization, document=document)
    work_admit(organization=organization, kind=ingestion.DOCUMENT, waiting=True)
    return document


@transaction.atomic
def document_delete(*, organization: Organization, principal: Principal, document: Document) -> None:
    """Delete a document with its chunks and vectors (in every embedding set). Its ingestion, if
    still running, finds the row gone and stops."""
    locked = Document.objects.select_for_update().filter(pk=document.pk).first()
    if locked is None:
        return
    audit_record(
        organization=organization,
        actor=principal,
        action="knowledge_document.deleted",
        target=locked,
        metadata={"knowledge_base": str(locked.knowledge_base_id), "chunks": locked.chunk_count},
    )
    _contents_delete(documents_where="id = %s", params=[locked.pk])
    Document.objects.filter(pk=locked.pk).delete()
    ingestion.document_progress_publish(organization=organization, document=locked)


@transaction.atomic
def document_cancel(*, organization: Organization, principal: Principal, document: Document) -> Document:
    """Stop a document's ingestion: a waiting one never reaches a worker; a running one stops
    before its next batch (a batch in flight completes and is billed, its vectors kept). What is
    done stays: `document_resume` continues from there."""
    cancelled = work_finish(
        organization=organization,
        kind=ingestion.DOCUMENT,
        item=document,
        status=WorkStatus.CANCELLED,
        error=("cancelled", f"cancelled by {principal.label}"),
    )
    if not cancelled:
        document.refresh_from_db()
        raise KnowledgeConflict(f"the document's ingestion has {document.status}", code="document_finished")
    audit_record(organization=organization, actor=principal, action="knowledge_document.cancelled", target=document)
    return document


@transaction.atomic
def document_resume(*, organization: Organization, principal: Principal, document: Document) -> Document:
    """Queue a failed or cancelled document again; ingestion continues where it stopped (chunks
    already embedded are not embedded, nor billed, again). A file that can't be read (empty,
    encrypted, broken) is not resumed: upload a readable one."""
    locked = Document.objects.select_for_update().filter(pk=document.pk).first()
    if locked is None:
        raise KnowledgeConflict("the document was deleted", code="document_gone")
    if locked.status not in (WorkStatus.FAILED, WorkStatus.CANCELLED):
        raise KnowledgeConflict(
            f"only a failed or cancelled document can be resumed; this one is {locked.status}",
            code="document_not_stopped",
        )
    if locked.error_class in PERMANENT_ERRORS:
        raise KnowledgeConflict(
            f"the file itself can't be ingested ({locked.error_message}); upload a corrected file",
            code="document_unreadable",
        )
    unchunked = locked.stage in (DocumentStage.UPLOADED, DocumentStage.PARSED)
    if unchunked and not DocumentUpload.objects.filter(document=locked).exists():
        raise KnowledgeConflict("the uploaded file is gone; upload it again", code="document_unreadable")
    previous = locked.error_class
    work_requeue(kind=ingestion.DOCUMENT, item=locked)
    audit_record(
        organization=organization,
        actor=principal,
        action="knowledge_document.resumed",
        target=locked,
        metadata={"after": previous, "stage": locked.stage},
    )
    ingestion.document_progress_publish(organization=organization, document=locked)
    work_admit(organization=organization, kind=ingestion.DOCUMENT, waiting=True)
    return locked
