"""Ingestion and re-embedding as durable work (apps.work): two kinds.

`knowledge_document` (a Document): parse the upload, cut it into chunks (one transaction: chunks,
stage `chunked`, the upload deleted), embed the chunks in batches into every live embedding set of
the knowledge base (its active set, and the set being built if the model is changing), then
`indexed`. `knowledge_embedding_set` (an EmbeddingSet): embed every chunk of the knowledge base's
ingested documents with the new model, then, in one transaction with the knowledge base locked,
make it the active set and delete the old set's vectors.

Exactly once, and billed once: a batch's vectors are written by `on_settled`, inside the
transaction that settles the embedding call's ledger row, so either both commit or neither does,
and the unique (embedding_set, chunk) makes a repeat insert a no-op. A run embeds only chunks that
have no vector in the set, so a resumed run (after a killed worker, a cancel, a budget refusal)
never embeds, nor bills, a committed chunk again. The one call that can be lost is the batch in
flight when a worker dies: its ledger row was written (reserved) before the call; the next run
settles it from its reservation (the engine's rule for a process that died: the provider may have
billed it) before embedding those chunks again. Request ids name the document or the set
(`kd<document>-...`, `ks<set>-...`), which is how the next run finds those open rows.

Locks, always in this order: knowledge base, document, embedding set, chunks.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib.postgres.search import SearchVector
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q, Value
from django.utils import timezone

from apps.audit.services import audit_record
from apps.billing.selectors import entitlement, plan_limit
from apps.knowledge.chunking import TooManyChunks, chunks_make, embedding_input
from apps.knowledge.models import (
    Chunk,
    ChunkEmbedding,
    Document,
    DocumentStage,
    DocumentUpload,
    EmbeddingSet,
    KnowledgeBase,
)
from apps.knowledge.parsing import CONTENT_TYPES, ParseError, document_parse
from apps.llm.calls import CallSource, ChatOutcome, LlmRefusal, attempts_abandon, embeddings_create
from apps.llm.models import AttemptStatus, UsageAttempt
from apps.tenants.models import Organization
from apps.work.models import UNFINISHED, WorkStatus
from apps.work.principals import principal_from_fields
from apps.work.progress import progress_publish
from apps.work.registry import WorkKind
from apps.work.services import work_fail, work_finish

logger = logging.getLogger(__name__)

# One embedding request: at most this many chunks, and this many estimated tokens (each chunk is at
# most 2,000; OpenAI takes 2,048 inputs and 300,000 tokens per request).
BATCH_CHUNKS = 64
BATCH_TOKENS = 32_000
# One document is cut into at most this many chunks, whatever the plan allows in all.
MAX_CHUNKS_PER_DOCUMENT = 20_000
# Full text: the heading path weighs more than the body. The search side queries the same config.
TEXT_SEARCH_CONFIG = "english"

_KIND_OF_TYPE = {content_type: kind for kind, content_type in CONTENT_TYPES.items()}


def reducible(model: str) -> bool:
    """Whether the model takes OpenAI's `dimensions` parameter (text-embedding-3, and the simulator
    that stands in for it), so that a knowledge base can ask for fewer dimensions than it gives."""
    return model.startswith(("text-embedding-3", "simulated-"))


def document_progress_publish(*, organization: Organization, document: Document) -> None:
    progress_publish(organization=organization, topic="document", object_id=document.pk)


def _set_progress_publish(organization: Organization, embedding_set: EmbeddingSet) -> None:
    progress_publish(organization=organization, topic="embedding_set", object_id=embedding_set.pk)


def row_lock(model: Any, pk: Any, mode: str) -> bool:
    """Lock one row (FOR UPDATE / FOR SHARE / FOR KEY SHARE); False if it is gone."""
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR {mode}", [pk])  # noqa: S608
        return cursor.fetchone() is not None


class _Stopped(Exception):
    """The run no longer owns its row (cancelled, deleted, taken over): stop without recording."""


# -- the embedding call -----------------------------------------------------------------------------


def _open_attempts_settle(organization: Organization, prefix: str) -> int:
    """Settle, from their reservations, the ledger rows left open by earlier runs that died (every
    open row of this document or set: only one run owns it at a time, and this one has not called
    yet). Found through the open-holds index (few rows), not by scanning the ledger."""
    open_ids = list(
        UsageAttempt.objects.filter(status=AttemptStatus.RESERVED, request_id__startswith=prefix)
        .values_list("request_id", flat=True)
        .distinct()
    )
    return attempts_abandon(organization=organization, request_ids=open_ids) if open_ids else 0


def _embed(
    *,
    organization: Organization,
    owner: Document | EmbeddingSet,
    prefix: str,
    embedding_set: EmbeddingSet,
    chunks: list[Chunk],
    store: Callable[[list[tuple[int, list[float]]], ChatOutcome], None],
) -> bool:
    """Embed `chunks` for `embedding_set` in one governed call; `store(pairs, outcome)` runs in the
    transaction that settles it. False if the attempt was settled by someone else (the vectors
    were then not stored)."""
    body: dict[str, Any] = {
        "model": embedding_set.embedding_model,
        "input": [embedding_input(text=chunk.text, heading_path=chunk.heading_path) for chunk in chunks],
        "encoding_format": "float",
    }
    if reducible(embedding_set.embedding_model):
        body["dimensions"] = embedding_set.dimensions
    stored = []

    def settled(outcome: ChatOutcome) -> None:
        data = sorted(outcome.body.get("data") or [], key=lambda item: item.get("index", 0))
        vectors = [item.get("embedding") for item in data]
        if len(vectors) != len(chunks) or not all(
            isinstance(vector, list) and len(vector) == embedding_set.dimensions for vector in vectors
        ):
            # Settled and paid, but unusable: the ledger row commits, nothing is stored.
            raise _BadVectors(embedding_set.embedding_model, embedding_set.dimensions)
        store([(chunk.pk, vector) for chunk, vector in zip(chunks, vectors, strict=True)], outcome)
        stored.append(True)

    try:
        embeddings_create(
            organization=organization,
            principal=principal_from_fields(owner),
            body=body,
            request_id=f"{prefix}{uuid.uuid4().hex[:16]}",
            source=CallSource.KNOWLEDGE_INGESTION,
            on_settled=settled,
        )
    except _BadVectors as exc:
        raise LlmRefusal(
            502,
            "embedding_mismatch",
            f"{exc.args[0]} did not answer {exc.args[1]}-dimension vectors for every input",
        ) from None
    return bool(stored)


class _BadVectors(Exception):
    pass


def _batch(chunks: list[Chunk]) -> list[Chunk]:
    """The first chunks that fit one request (BATCH_CHUNKS and BATCH_TOKENS)."""
    taken: list[Chunk] = []
    tokens = 0
    for chunk in chunks:
        if taken and tokens + chunk.token_estimate > BATCH_TOKENS:
            break
        taken.append(chunk)
        tokens += chunk.token_estimate
    return taken


def _vectors_insert(embedding_set: EmbeddingSet, pairs: list[tuple[int, list[float]]]) -> int:
    """Insert vectors of chunks that still exist (locked, so a delete waits), once per set."""
    alive = set(Chunk.objects.select_for_update().filter(pk__in=[pk for pk, _ in pairs]).values_list("pk", flat=True))
    rows = [
        ChunkEmbedding(embedding_set=embedding_set, chunk_id=pk, dimensions=embedding_set.dimensions, embedding=vector)
        for pk, vector in pairs
        if pk in alive
    ]
    before = ChunkEmbedding.objects.filter(embedding_set=embedding_set, chunk_id__in=alive).count()
    ChunkEmbedding.objects.bulk_create(rows, ignore_conflicts=True)
    return ChunkEmbedding.objects.filter(embedding_set=embedding_set, chunk_id__in=alive).count() - before


def _set_live(embedding_set_id: int) -> bool:
    """Whether vectors of this set are still wanted: it is the active set, or it is being built.
    Takes a share lock on the set, so a switch or an abandon (which lock it for update before they
    delete its vectors) waits for the caller's insert, or the caller sees the set dead."""
    if not row_lock(EmbeddingSet, embedding_set_id, "SHARE"):
        return False
    found = EmbeddingSet.objects.filter(pk=embedding_set_id).values("status", "knowledge_base_id").first()
    if found is None:
        return False
    if found["status"] in UNFINISHED:
        return True
    return KnowledgeBase.objects.filter(pk=found["knowledge_base_id"], active_set_id=embedding_set_id).exists()


def live_sets(knowledge_base_id: Any) -> list[EmbeddingSet]:
    """The sets a new chunk must have a vector in: the active one, and the one being built."""
    base = KnowledgeBase.objects.filter(pk=knowledge_base_id).values("active_set_id").first()
    if base is None:
        return []
    return list(
        EmbeddingSet.objects.filter(knowledge_base_id=knowledge_base_id)
        .filter(Q(pk=base["active_set_id"]) | Q(status__in=UNFINISHED))
        .order_by("-activated_at", "pk")
    )


# -- documents --------------------------------------------------------------------------------------


def _document_prefix(document: Document) -> str:
    return f"kd{document.pk.hex}-"


def _owned(document: Document) -> Any:
    return Document.objects.filter(pk=document.pk, status=WorkStatus.RUNNING, attempts=document.attempts)


def _document_update(document: Document, **values: Any) -> None:
    """Update the row this run owns, or stop (cancelled, deleted or taken over meanwhile)."""
    if not _owned(document).update(**values):
        raise _Stopped
    for name, value in values.items():
        if not hasattr(value, "resolve_expression"):
            setattr(document, name, value)


def _document_fail(organization: Organization, document: Document, code: str, message: str) -> None:
    work_fail(organization=organization, kind=DOCUMENT, item=document, error_class=code, message=message)


BUDGET_CODES = frozenset({"budget_exceeded", "plan_usage_exhausted"})


def _document_run(organization: Organization, document: Document) -> None:
    try:
        _document_ingest(organization, document)
    except _Stopped:
        logger.info("document %s: ingestion stopped (cancelled, deleted or taken over)", document.pk)
    except LlmRefusal as refusal:
        if refusal.code not in BUDGET_CODES:
            raise  # the runtime retries what is transient and fails the rest with the refusal's code
        _document_fail(
            organization,
            document,
            refusal.code,
            f"{refusal.message}. What was embedded is kept: raise the budget, then resume the document.",
        )


def _document_ingest(organization: Organization, document: Document) -> None:
    _open_attempts_settle(organization, _document_prefix(document))
    base = KnowledgeBase.objects.filter(pk=document.knowledge_base_id).first()
    if base is None:
        raise _Stopped
    if document.stage in (DocumentStage.UPLOADED, DocumentStage.PARSED) and not _document_chunk(
        organization, document, base
    ):
        return
    while True:
        while _document_embed_batch(organization, document) is not None:
            pass
        with transaction.atomic():
            # Shared with the switch of a re-embedding (which locks the base for update): either the
            # switch committed and its set is checked here, or it waits for this commit.
            if not row_lock(KnowledgeBase, base.pk, "SHARE"):
                raise _Stopped
            if any(_document_missing(document, found).exists() for found in live_sets(base.pk)):
                continue  # a set went live since the last batch (a re-embedding started): embed for it
            active = KnowledgeBase.objects.filter(pk=base.pk).values_list("active_set_id", flat=True).first()
            embedded_count = ChunkEmbedding.objects.filter(chunk__document=document, embedding_set_id=active).count()
            _document_update(document, stage=DocumentStage.EMBEDDED, embedded_count=embedded_count)
            if not work_finish(
                organization=organization,
                kind=DOCUMENT,
                item=document,
                status=WorkStatus.SUCCEEDED,
                values={"stage": DocumentStage.INDEXED},
                attempt=document.attempts,
            ):
                raise _Stopped
            return


def _document_missing(document: Document, embedding_set: EmbeddingSet) -> Any:
    """The document's chunks without a vector in the set, in order."""
    return (
        Chunk.objects.filter(document=document)
        .filter(~Exists(ChunkEmbedding.objects.filter(embedding_set=embedding_set, chunk_id=OuterRef("pk"))))
        .order_by("ordinal")
    )


def _document_chunk(organization: Organization, document: Document, base: KnowledgeBase) -> bool:
    """Parse and chunk the upload: chunks, stage and the upload's deletion in one transaction.
    False if the document failed (its reason recorded)."""
    upload = DocumentUpload.objects.filter(document=document).first()
    if upload is None:
        _document_fail(organization, document, "upload_missing", "the uploaded file is gone; upload it again")
        return False
    kind = _KIND_OF_TYPE.get(document.content_type, "text")
    try:
        parsed = document_parse(kind=kind, content=bytes(upload.content))
    except ParseError as exc:
        _document_fail(organization, document, exc.code, str(exc))
        return False
    _document_update(document, stage=DocumentStage.PARSED)
    document_progress_publish(organization=organization, document=document)
    try:
        drafts = chunks_make(
            parsed,
            chunk_tokens=base.chunk_tokens,
            overlap_tokens=base.chunk_overlap_tokens,
            max_chunks=MAX_CHUNKS_PER_DOCUMENT,
        )
    except TooManyChunks as exc:
        _document_fail(organization, document, "too_many_chunks", f"{exc}; upload it in parts or use larger chunks")
        return False
    with transaction.atomic():
        # The plan's chunk limit (if it has one), counted under a lock of the organization's
        # chunking (one chunking transaction at a time reads and adds), so two documents can't both fit.
        limited = entitlement(organization, "knowledge_chunks").limit is not None
        if limited:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext('knowledge-chunks:' || current_schema()))")
        used = Chunk.objects.count() if limited else 0
        allowed = entitlement(organization, "knowledge_chunks", used=used, adding=len(drafts))
        if limited and not allowed.allowed:
            _document_fail(
                organization,
                document,
                "plan_limit_chunks",
                f"the document makes {len(drafts):,} chunks and the organization stores {used:,} of the "
                f"{allowed.limit:,} its plan allows; delete documents or upgrade the plan, then resume it",
            )
            return False
        if not row_lock(Document, document.pk, "UPDATE"):
            raise _Stopped
        # A run that died after this commit never gets here again (stage is `chunked`); one that died
        # before left nothing.
        Chunk.objects.bulk_create(
            [
                Chunk(
                    document=document,
                    knowledge_base_id=document.knowledge_base_id,
                    ordinal=draft.ordinal,
                    text=draft.text,
                    heading_path=draft.heading_path,
                    token_estimate=draft.token_estimate,
                )
                for draft in drafts
            ],
            batch_size=1000,
        )
        Chunk.objects.filter(document=document).update(
            search_vector=SearchVector("heading_path", weight="A", config=TEXT_SEARCH_CONFIG)
            + SearchVector("text", weight="B", config=TEXT_SEARCH_CONFIG)
        )
        _document_update(document, stage=DocumentStage.CHUNKED, chunk_count=len(drafts), embedded_count=0)
        DocumentUpload.objects.filter(document=document).delete()
        document_progress_publish(organization=organization, document=document)
    return True


def _document_embed_batch(organization: Organization, document: Document) -> int | None:
    """Embed the next batch of the document's chunks that lack a vector in a live set; None when
    none lacks one."""
    if not _owned(document).exists():
        raise _Stopped
    for embedding_set in live_sets(document.knowledge_base_id):
        candidates = list(
            _document_missing(document, embedding_set).only("pk", "text", "heading_path", "token_estimate")[
                :BATCH_CHUNKS
            ]
        )
        if not candidates:
            continue
        chunks = _batch(candidates)
        counted = embedding_set.activated_at is not None and embedding_set.status == WorkStatus.SUCCEEDED

        def store(pairs: list[tuple[int, list[float]]], outcome: ChatOutcome, target: EmbeddingSet = embedding_set,
                  counted: bool = counted) -> None:  # fmt: skip
            # The document first (lock order), then the set: a deleted document or a set no longer
            # live keeps nothing; its cost is still the document's (the ledger has it).
            if not row_lock(Document, document.pk, "UPDATE"):
                return
            added = _vectors_insert(target, pairs) if _set_live(target.pk) else 0
            values: dict[str, Any] = {"cost_usd": F("cost_usd") + outcome.cost_usd}
            if counted and added:
                values["embedded_count"] = F("embedded_count") + added
            Document.objects.filter(pk=document.pk).update(**values)

        _embed(
            organization=organization,
            owner=document,
            prefix=_document_prefix(document),
            embedding_set=embedding_set,
            chunks=chunks,
            store=store,
        )
        now = Document.objects.filter(pk=document.pk).values("embedded_count", "cost_usd").first()
        if now is None:
            raise _Stopped  # deleted while its batch was in flight
        document.embedded_count, document.cost_usd = now["embedded_count"], now["cost_usd"]
        document_progress_publish(organization=organization, document=document)
        return len(chunks)
    return None


def _document_abandon(organization: Organization, document: Document, attempts: list[int]) -> None:
    _open_attempts_settle(organization, _document_prefix(document))


def _document_cap(organization: Organization) -> int:
    return plan_limit(organization, "concurrent_jobs")


DOCUMENT = WorkKind(
    name="knowledge_document",
    model=Document,
    execute=_document_run,
    abandon=_document_abandon,
    progress_of=lambda document: ("document", document.pk),
    cap=_document_cap,
)


# -- embedding sets ---------------------------------------------------------------------------------


def _set_prefix(embedding_set: EmbeddingSet) -> str:
    return f"ks{embedding_set.pk}-"


def _set_owned(embedding_set: EmbeddingSet) -> Any:
    return EmbeddingSet.objects.filter(pk=embedding_set.pk, status=WorkStatus.RUNNING, attempts=embedding_set.attempts)


def _set_chunks_missing(embedding_set: EmbeddingSet) -> Any:
    """Chunks of the base's ingested documents without a vector in the set. Documents still being
    ingested embed their own chunks into every live set (this set included)."""
    return Chunk.objects.filter(
        knowledge_base_id=embedding_set.knowledge_base_id, document__status=WorkStatus.SUCCEEDED
    ).filter(~Exists(ChunkEmbedding.objects.filter(embedding_set=embedding_set, chunk_id=OuterRef("pk"))))


def _set_run(organization: Organization, embedding_set: EmbeddingSet) -> None:
    try:
        _set_build(organization, embedding_set)
    except _Stopped:
        logger.info("embedding set %s: build stopped (superseded or deleted)", embedding_set.pk)


def _set_build(organization: Organization, embedding_set: EmbeddingSet) -> None:
    _open_attempts_settle(organization, _set_prefix(embedding_set))
    while True:
        if not _set_owned(embedding_set).exists():
            raise _Stopped
        candidates = list(
            _set_chunks_missing(embedding_set)
            .order_by("pk")
            .only("pk", "text", "heading_path", "token_estimate")[:BATCH_CHUNKS]
        )
        if not candidates:
            if _set_switch(organization, embedding_set):
                return
            continue

        def store(pairs: list[tuple[int, list[float]]], outcome: ChatOutcome) -> None:
            if _set_live(embedding_set.pk):
                _vectors_insert(embedding_set, pairs)
            EmbeddingSet.objects.filter(pk=embedding_set.pk).update(cost_usd=F("cost_usd") + outcome.cost_usd)

        _embed(
            organization=organization,
            owner=embedding_set,
            prefix=_set_prefix(embedding_set),
            embedding_set=embedding_set,
            chunks=_batch(candidates),
            store=store,
        )
        _set_progress_publish(organization, embedding_set)


def _set_switch(organization: Organization, embedding_set: EmbeddingSet) -> bool:
    """Make the complete set the active one, in one transaction with the base locked; delete the
    old set's vectors. False if chunks were added meanwhile (the caller embeds them first)."""
    with transaction.atomic():
        if not row_lock(KnowledgeBase, embedding_set.knowledge_base_id, "UPDATE"):
            raise _Stopped
        if _set_chunks_missing(embedding_set).exists():
            return False
        base = KnowledgeBase.objects.get(pk=embedding_set.knowledge_base_id)
        old = base.active_set_id
        now = timezone.now()
        if not work_finish(
            organization=organization,
            kind=EMBEDDING_SET,
            item=embedding_set,
            status=WorkStatus.SUCCEEDED,
            values={"activated_at": now},
            attempt=embedding_set.attempts,
        ):
            raise _Stopped
        KnowledgeBase.objects.filter(pk=base.pk).update(active_set=embedding_set)
        if old is not None and old != embedding_set.pk:
            row_lock(EmbeddingSet, old, "UPDATE")
        # The old set's vectors, and any left by a build that failed and was never retried.
        ChunkEmbedding.objects.filter(embedding_set__knowledge_base_id=base.pk).exclude(
            embedding_set=embedding_set
        ).delete()
        # Documents count what they have in the set search answers from.
        Document.objects.filter(knowledge_base_id=base.pk).update(
            embedded_count=_embedded_in(embedding_set.pk),
        )
        audit_record(
            organization=organization,
            actor=principal_from_fields(embedding_set),
            action="knowledge_base.reembedded",
            target=base,
            metadata={
                "embedding_set": embedding_set.pk,
                "previous_set": old,
                "embedding_model": embedding_set.embedding_model,
                "dimensions": embedding_set.dimensions,
            },
        )
        _set_progress_publish(organization, embedding_set)
    return True


def _embedded_in(embedding_set_id: int) -> Any:
    from django.db.models import Count, IntegerField, Subquery
    from django.db.models.functions import Coalesce

    counted = (
        ChunkEmbedding.objects.filter(embedding_set_id=embedding_set_id, chunk__document_id=OuterRef("pk"))
        .order_by()
        .values("chunk__document_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def embedding_set_abandon(*, organization: Organization, embedding_set: EmbeddingSet, reason: str) -> None:
    """Stop building a set that is no longer wanted (the model changed again) and delete its
    vectors; a batch in flight stores nothing. Called with the knowledge base locked."""
    row_lock(EmbeddingSet, embedding_set.pk, "UPDATE")
    work_finish(
        organization=organization,
        kind=EMBEDDING_SET,
        item=embedding_set,
        status=WorkStatus.CANCELLED,
        error=("superseded", f"the embedding model was changed again by {reason}"),
    )
    ChunkEmbedding.objects.filter(embedding_set=embedding_set).delete()


def _set_abandon(organization: Organization, embedding_set: EmbeddingSet, attempts: list[int]) -> None:
    _open_attempts_settle(organization, _set_prefix(embedding_set))


EMBEDDING_SET = WorkKind(
    name="knowledge_embedding_set",
    model=EmbeddingSet,
    execute=_set_run,
    abandon=_set_abandon,
    progress_of=lambda embedding_set: ("embedding_set", embedding_set.pk),
    cap=lambda organization: 2,
)

__all__ = [
    "BATCH_CHUNKS",
    "BATCH_TOKENS",
    "DOCUMENT",
    "EMBEDDING_SET",
    "MAX_CHUNKS_PER_DOCUMENT",
    "TEXT_SEARCH_CONFIG",
    "document_progress_publish",
    "embedding_set_abandon",
    # The engine's call, named here so that tests can watch or interrupt each batch.
    "embeddings_create",
    "live_sets",
    "reducible",
    "row_lock",
]
