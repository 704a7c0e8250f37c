"""REST API v1: knowledge bases, their documents (upload, progress, cancel, resume) and search.

Thin on purpose: parse, check the declared permission (`knowledge:read` / `knowledge:write`), call
one service or selector, render. Refusals of the services (KnowledgeInvalid 400, KnowledgeConflict
409, KnowledgeTooLarge 413, KnowledgeNotFound 404, the engine's LlmRefusal) are rendered by
apps.api.errors. Another organization's ids are simply absent here: its rows live in its own schema.
"""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

import django_filters
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.api.authentication import request_organization, request_principal
from apps.api.idempotency import idempotent
from apps.api.parsers import BoundedJSONParser, BoundedMultiPartParser
from apps.knowledge.models import (
    MAX_CHUNK_TOKENS,
    MIN_CHUNK_TOKENS,
    SUPPORTED_DIMENSIONS,
    Document,
    DocumentStage,
    KnowledgeBase,
)
from apps.knowledge.search import MAX_QUERY_CHARS, MAX_TOP_K, MODES, knowledge_search
from apps.knowledge.selectors import (
    document_get,
    document_progress,
    embedding_set_progress,
    knowledge_base_get,
    knowledge_bases_counted,
)
from apps.knowledge.services import (
    document_bytes_limit,
    document_cancel,
    document_delete,
    document_resume,
    document_upload,
    knowledge_base_create,
    knowledge_base_delete,
    knowledge_base_update,
)
from apps.rbac.permissions import Permission
from apps.work.models import WorkStatus
from apps.work.progress import progress_stream
from cognitionos.bounded_json import JsonTooDeep, json_loads_bounded

# --- knowledge bases ---------------------------------------------------------------------------


class KnowledgeBaseCreateInput(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    embedding_model = serializers.CharField(
        max_length=100, required=False, help_text="An embedding model of the catalog; the default one if omitted"
    )
    dimensions = serializers.ChoiceField(
        choices=SUPPORTED_DIMENSIONS, required=False, help_text="The vectors' size (reduced by the model if smaller)"
    )
    chunk_tokens = serializers.IntegerField(min_value=MIN_CHUNK_TOKENS, max_value=MAX_CHUNK_TOKENS, required=False)
    chunk_overlap_tokens = serializers.IntegerField(
        min_value=0, max_value=MAX_CHUNK_TOKENS // 2, required=False, help_text="At most half of chunk_tokens"
    )


class KnowledgeBaseUpdateInput(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=100, required=False)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    embedding_model = serializers.CharField(
        max_length=100,
        required=False,
        help_text="Changing it (or `dimensions`) re-embeds every chunk in the background",
    )
    dimensions = serializers.ChoiceField(choices=SUPPORTED_DIMENSIONS, required=False)


# Why work stopped: `class` is a Python keyword, so this serializer is built with type().
FailureOutput: type[serializers.Serializer[Any]] = type(
    "FailureOutput",
    (serializers.Serializer,),
    {
        "class": serializers.CharField(help_text="The kind of failure (stable)"),
        "message": serializers.CharField(help_text="For people"),
    },
)


class EmbeddingSetOutput(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    embedding_model = serializers.CharField()
    dimensions = serializers.IntegerField()
    status = serializers.ChoiceField(choices=WorkStatus.choices)
    embedded_count = serializers.IntegerField(help_text="Chunks embedded in this set so far")
    chunk_count = serializers.IntegerField(help_text="Chunks of the knowledge base to embed")
    error = FailureOutput(allow_null=True)


def _reembedding(knowledge_base: KnowledgeBase) -> dict[str, Any] | None:
    """The newest embedding set when it is not the active one: being built, or stopped (failed,
    cancelled) with its reason, until the next change of model or size."""
    newest = knowledge_base.embedding_sets.order_by("-created_at", "-pk").first()
    if newest is None or newest.pk == knowledge_base.active_set_id:
        return None
    progress = embedding_set_progress(newest)
    error = {"class": progress["error_class"], "message": progress["error_message"] or ""}
    return {**progress, "error": error if progress["error_class"] else None}


class ActiveEmbeddingOutput(serializers.Serializer[Any]):
    embedding_model = serializers.CharField()
    dimensions = serializers.IntegerField()


class KnowledgeBaseOutput(serializers.Serializer[KnowledgeBase]):
    id = serializers.UUIDField()
    name = serializers.CharField()
    description = serializers.CharField()
    embedding_model = serializers.CharField(help_text="What new documents are embedded with")
    dimensions = serializers.IntegerField()
    chunk_tokens = serializers.IntegerField()
    chunk_overlap_tokens = serializers.IntegerField()
    document_count = serializers.SerializerMethodField()
    chunk_count = serializers.SerializerMethodField()
    active_embedding = serializers.SerializerMethodField(
        help_text="The model and size search answers from (null before the first set exists)"
    )
    reembedding = serializers.SerializerMethodField(
        help_text="The set being built after a model or size change (null when none is): search answers "
        "from `active_embedding` until it succeeds"
    )
    created_at = serializers.DateTimeField()

    def get_document_count(self, knowledge_base: KnowledgeBase) -> int:
        count = getattr(knowledge_base, "document_count", None)
        return int(count) if count is not None else knowledge_base.documents.count()

    def get_chunk_count(self, knowledge_base: KnowledgeBase) -> int:
        count = getattr(knowledge_base, "chunk_count", None)
        if count is None:
            count = sum(knowledge_base.documents.values_list("chunk_count", flat=True))
        return int(count or 0)

    @extend_schema_field(ActiveEmbeddingOutput(allow_null=True))
    def get_active_embedding(self, knowledge_base: KnowledgeBase) -> dict[str, Any] | None:
        active = knowledge_base.active_set
        if active is None:
            return None
        return {"embedding_model": active.embedding_model, "dimensions": active.dimensions}

    @extend_schema_field(EmbeddingSetOutput(allow_null=True))
    def get_reembedding(self, knowledge_base: KnowledgeBase) -> dict[str, Any] | None:
        return _reembedding(knowledge_base)


def _knowledge_base(request: Request, knowledge_base_id: UUID) -> KnowledgeBase:
    return knowledge_base_get(organization=request_organization(request), knowledge_base_id=knowledge_base_id)


class KnowledgeBaseListCreateApi(ListAPIView[KnowledgeBase]):
    required_permissions = {"GET": Permission.KNOWLEDGE_READ, "POST": Permission.KNOWLEDGE_WRITE}
    serializer_class = KnowledgeBaseOutput

    def get_queryset(self) -> QuerySet[KnowledgeBase]:
        if getattr(self, "swagger_fake_view", False):  # the schema generator: no request, no tenant
            return KnowledgeBase.objects.none()
        # The queryset itself, as the jobs and documents lists do, for the shared cursor pagination.
        return knowledge_bases_counted(organization=request_organization(self.request))

    @extend_schema(
        operation_id="knowledge_bases_list",
        summary="List knowledge bases, newest first, with document and chunk counts",
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=KnowledgeBaseCreateInput, responses={201: KnowledgeBaseOutput}, summary="Create a knowledge base"
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = KnowledgeBaseCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        knowledge_base = knowledge_base_create(
            organization=request_organization(request), principal=request_principal(request), **data.validated_data
        )
        return Response(
            KnowledgeBaseOutput(knowledge_base).data,
            status=201,
            headers={"Location": f"/api/v1/knowledge-bases/{knowledge_base.pk}"},
        )


class KnowledgeBaseDetailApi(APIView):
    required_permissions = {
        "GET": Permission.KNOWLEDGE_READ,
        "PATCH": Permission.KNOWLEDGE_WRITE,
        "DELETE": Permission.KNOWLEDGE_WRITE,
    }

    @extend_schema(responses=KnowledgeBaseOutput, summary="A knowledge base: counts and re-embedding status")
    def get(self, request: Request, knowledge_base_id: UUID) -> Response:
        return Response(KnowledgeBaseOutput(_knowledge_base(request, knowledge_base_id)).data)

    @extend_schema(
        request=KnowledgeBaseUpdateInput,
        responses={
            200: KnowledgeBaseOutput,
            409: OpenApiResponse(description="the name is taken, or a re-embedding is already running"),
        },
        summary="Change a knowledge base (a new embedding model or size re-embeds in the background)",
    )
    def patch(self, request: Request, knowledge_base_id: UUID) -> Response:
        knowledge_base = _knowledge_base(request, knowledge_base_id)
        data = KnowledgeBaseUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        knowledge_base_update(
            organization=request_organization(request),
            principal=request_principal(request),
            knowledge_base=knowledge_base,
            **data.validated_data,
        )
        return Response(KnowledgeBaseOutput(_knowledge_base(request, knowledge_base_id)).data)

    @extend_schema(responses={204: None}, summary="Delete a knowledge base with its documents, chunks and vectors")
    def delete(self, request: Request, knowledge_base_id: UUID) -> Response:
        knowledge_base_delete(
            organization=request_organization(request),
            principal=request_principal(request),
            knowledge_base=_knowledge_base(request, knowledge_base_id),
        )
        return Response(status=204)


# --- documents ---------------------------------------------------------------------------------


class DocumentOutput(serializers.Serializer[Document]):
    id = serializers.UUIDField()
    knowledge_base = serializers.UUIDField(source="knowledge_base_id")
    title = serializers.CharField()
    filename = serializers.CharField()
    content_type = serializers.CharField()
    size_bytes = serializers.IntegerField()
    sha256 = serializers.CharField()
    metadata = serializers.DictField()
    status = serializers.SerializerMethodField(help_text="queued, running, succeeded, failed or cancelled")
    stage = serializers.SerializerMethodField(
        help_text="How far ingestion got: uploaded, parsed, chunked, embedded, indexed"
    )
    chunk_count = serializers.SerializerMethodField()
    embedded_count = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField(help_text="Why the document failed or stopped (null otherwise)")
    cost_usd = serializers.DecimalField(max_digits=14, decimal_places=8, help_text="Embedding spend so far")
    runs = serializers.IntegerField(source="attempts", help_text="How many times a worker started its ingestion")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def _progress(self, document: Document) -> dict[str, Any]:
        cached: dict[str, Any] | None = getattr(document, "_api_progress", None)
        if cached is None:
            cached = document_progress(document)
            document._api_progress = cached  # type: ignore[attr-defined]
        return cached

    @extend_schema_field(serializers.ChoiceField(choices=WorkStatus.choices))
    def get_status(self, document: Document) -> str:
        return str(self._progress(document)["status"])

    @extend_schema_field(serializers.ChoiceField(choices=DocumentStage.choices))
    def get_stage(self, document: Document) -> str:
        return str(self._progress(document)["stage"])

    def get_chunk_count(self, document: Document) -> int:
        return int(self._progress(document)["chunk_count"])

    def get_embedded_count(self, document: Document) -> int:
        return int(self._progress(document)["embedded_count"])

    @extend_schema_field(FailureOutput(allow_null=True))
    def get_error(self, document: Document) -> dict[str, str] | None:
        progress = self._progress(document)
        if not progress.get("error_class"):
            return None
        return {"class": str(progress["error_class"]), "message": str(progress.get("error_message") or "")}


def _not_a_number(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


class DocumentFileInput(serializers.Serializer[Any]):
    file = serializers.FileField(max_length=255, help_text="Plain text, Markdown, HTML or PDF")
    title = serializers.CharField(max_length=300, required=False, help_text="The file's name if omitted")
    metadata = serializers.CharField(
        required=False, help_text='A JSON object of flat values for search filters, e.g. {"team": "support"}'
    )

    def validate_metadata(self, value: str) -> Any:
        # Its keys and values are the service's to judge (metadata_clean), as for a JSON upload.
        try:
            return json_loads_bounded(value, parse_constant=_not_a_number)
        except (JsonTooDeep, ValueError) as exc:
            raise serializers.ValidationError(f"metadata is not JSON ({exc})") from exc


class DocumentTextInput(serializers.Serializer[Any]):
    text = serializers.CharField(trim_whitespace=False, help_text="The document's content, as text")
    filename = serializers.CharField(
        max_length=255, help_text="Its name; the extension (.txt, .md, .html) says how to read the text"
    )
    title = serializers.CharField(max_length=300, required=False)
    metadata = serializers.DictField(
        required=False, help_text='Flat values for search filters, e.g. {"team": "support"}'
    )


class DocumentFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=WorkStatus.choices)
    stage = django_filters.MultipleChoiceFilter(choices=DocumentStage.choices)

    class Meta:
        model = Document
        fields = ("status", "stage")


class DocumentListUploadApi(ListAPIView[Document]):
    required_permissions = {"GET": Permission.KNOWLEDGE_READ, "POST": Permission.KNOWLEDGE_WRITE}
    serializer_class = DocumentOutput
    filterset_class = DocumentFilter
    parser_classes = [BoundedMultiPartParser, BoundedJSONParser]

    def get_queryset(self) -> QuerySet[Document]:
        if getattr(self, "swagger_fake_view", False):  # the schema generator: no request, no tenant
            return Document.objects.none()
        knowledge_base = _knowledge_base(self.request, self.kwargs["knowledge_base_id"])
        # The queryset itself, as the jobs list does, for the cursor pagination and the filters.
        return Document.objects.filter(knowledge_base=knowledge_base)

    def upload_max_bytes(self, request: Request) -> int:
        """The plan's largest document: BoundedMultiPartParser refuses a bigger file unread (413)."""
        return document_bytes_limit(request_organization(request))

    @extend_schema(summary="List a knowledge base's documents, newest first (filter: status, stage)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request={"multipart/form-data": DocumentFileInput, "application/json": DocumentTextInput},
        responses={
            202: DocumentOutput,
            413: OpenApiResponse(description="The file is larger than the plan's largest document"),
        },
        summary="Upload a document (multipart `file`, or JSON `text` and `filename`); ingestion runs in the background",
    )
    @idempotent
    def post(self, request: Request, knowledge_base_id: UUID) -> Response:
        knowledge_base = _knowledge_base(request, knowledge_base_id)
        if (request.content_type or "").startswith("multipart/"):
            upload = DocumentFileInput(data=request.data)
            upload.is_valid(raise_exception=True)
            fields = upload.validated_data
            file = fields["file"]
            filename, content_type, content = str(file.name), file.content_type or None, file.read()
        else:
            text = DocumentTextInput(data=request.data)
            text.is_valid(raise_exception=True)
            fields = text.validated_data
            filename, content_type, content = fields["filename"], None, fields["text"].encode("utf-8")
        document = document_upload(
            organization=request_organization(request),
            principal=request_principal(request),
            knowledge_base=knowledge_base,
            filename=filename,
            content_type=content_type,
            content=content,
            title=fields.get("title"),
            metadata=fields.get("metadata"),
        )
        return Response(
            DocumentOutput(document).data,
            status=202,
            headers={"Location": f"/api/v1/knowledge-bases/{knowledge_base.pk}/documents/{document.pk}"},
        )


def _document(request: Request, knowledge_base_id: UUID, document_id: UUID) -> Document:
    return document_get(knowledge_base=_knowledge_base(request, knowledge_base_id), document_id=document_id)


class DocumentDetailApi(APIView):
    required_permissions = {"GET": Permission.KNOWLEDGE_READ, "DELETE": Permission.KNOWLEDGE_WRITE}

    @extend_schema(responses=DocumentOutput, summary="A document and its ingestion's progress")
    def get(self, request: Request, knowledge_base_id: UUID, document_id: UUID) -> Response:
        return Response(DocumentOutput(_document(request, knowledge_base_id, document_id)).data)

    @extend_schema(responses={204: None}, summary="Delete a document with its chunks and vectors")
    def delete(self, request: Request, knowledge_base_id: UUID, document_id: UUID) -> Response:
        document_delete(
            organization=request_organization(request),
            principal=request_principal(request),
            document=_document(request, knowledge_base_id, document_id),
        )
        return Response(status=204)


class DocumentCancelApi(APIView):
    required_permissions = {"POST": Permission.KNOWLEDGE_WRITE}

    @extend_schema(
        request=None,
        responses={200: DocumentOutput, 409: OpenApiResponse(description="the document's ingestion already ended")},
        summary="Stop a document's ingestion (resume it later)",
    )
    def post(self, request: Request, knowledge_base_id: UUID, document_id: UUID) -> Response:
        document = document_cancel(
            organization=request_organization(request),
            principal=request_principal(request),
            document=_document(request, knowledge_base_id, document_id),
        )
        return Response(DocumentOutput(document).data)


class DocumentResumeApi(APIView):
    required_permissions = {"POST": Permission.KNOWLEDGE_WRITE}

    @extend_schema(
        request=None,
        responses={
            202: DocumentOutput,
            409: OpenApiResponse(description="the document is neither failed nor cancelled"),
        },
        summary="Resume a failed or cancelled document where it stopped",
    )
    def post(self, request: Request, knowledge_base_id: UUID, document_id: UUID) -> Response:
        document = document_resume(
            organization=request_organization(request),
            principal=request_principal(request),
            document=_document(request, knowledge_base_id, document_id),
        )
        return Response(DocumentOutput(document).data, status=202)


class DocumentEventsApi(APIView):
    required_permissions = {"GET": Permission.KNOWLEDGE_READ}

    @extend_schema(
        responses={(200, "text/event-stream"): OpenApiResponse(description="`document` events until ingestion ends")},
        summary="Follow a document's ingestion (server-sent events)",
    )
    def get(self, request: Request, knowledge_base_id: UUID, document_id: UUID) -> StreamingHttpResponse:
        document_id = _document(request, knowledge_base_id, document_id).pk

        def poll() -> tuple[list[tuple[str, str, Any]], bool] | None:
            document = Document.objects.filter(pk=document_id).first()
            if document is None:
                return None
            return [("document", "progress", DocumentOutput(document).data)], document.is_finished

        return progress_stream(
            organization=request_organization(request), topic="document", object_id=document_id, poll=poll
        )


# --- search ------------------------------------------------------------------------------------


class SearchInput(serializers.Serializer[Any]):
    query = serializers.CharField(max_length=MAX_QUERY_CHARS, help_text="What to look for, in words")
    top_k = serializers.IntegerField(min_value=1, max_value=MAX_TOP_K, default=5)
    mode = serializers.ChoiceField(
        choices=MODES, default="hybrid", help_text="hybrid (meaning and words, fused by rank), vector or text"
    )
    filters = serializers.DictField(
        required=False, help_text='Document metadata that must match exactly, e.g. {"team": "support"}'
    )


class HitOutput(serializers.Serializer[Any]):
    chunk_id = serializers.IntegerField()
    document_id = serializers.UUIDField()
    document_title = serializers.CharField()
    position = serializers.IntegerField(source="ordinal", help_text="The chunk's place in its document, from 0")
    heading_path = serializers.CharField(help_text="The headings the chunk sits under, outermost first")
    text = serializers.CharField()
    score = serializers.FloatField(help_text="The fused score hits are ordered by (higher is better)")
    vector_score = serializers.FloatField(allow_null=True, help_text="Cosine similarity (vector and hybrid modes)")
    text_rank = serializers.FloatField(allow_null=True, help_text="Full-text rank (text and hybrid modes)")
    matches = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField(), min_length=2, max_length=2),
        help_text="[start, end) character offsets in `text` of the query's words",
    )


class SearchOutput(serializers.Serializer[Any]):
    knowledge_base = serializers.UUIDField()
    query = serializers.CharField()
    mode = serializers.ChoiceField(choices=MODES)
    model = serializers.CharField(allow_null=True, help_text="The embedding model the query was embedded with")
    cost_usd = serializers.DecimalField(max_digits=14, decimal_places=8)
    hits = HitOutput(many=True)


class KnowledgeSearchApi(APIView):
    required_permissions = {"POST": Permission.KNOWLEDGE_READ}

    @extend_schema(
        request=SearchInput,
        responses={
            200: SearchOutput,
            402: OpenApiResponse(description="A budget or the plan refuses the query's embedding"),
        },
        summary="Search a knowledge base by meaning and by words",
    )
    def post(self, request: Request, knowledge_base_id: UUID) -> Response:
        knowledge_base = _knowledge_base(request, knowledge_base_id)
        data = SearchInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        request_id = uuid.uuid4().hex
        results = knowledge_search(
            organization=request_organization(request),
            principal=request_principal(request),
            knowledge_base=knowledge_base,
            query=fields["query"],
            top_k=fields["top_k"],
            mode=fields["mode"],
            filters=fields.get("filters"),
            request_id=request_id,
        )
        body = {
            "knowledge_base": knowledge_base.pk,
            "query": fields["query"],
            "mode": results.mode,
            "model": results.model,
            "cost_usd": results.cost_usd,
            "hits": [
                {
                    "chunk_id": hit.chunk_id,
                    "document_id": hit.document_id,
                    "document_title": hit.document_title,
                    "ordinal": hit.ordinal,
                    "heading_path": hit.heading_path,
                    "text": hit.text,
                    "score": hit.score,
                    "vector_score": hit.vector_score,
                    "text_rank": hit.text_rank,
                    "matches": [list(match) for match in hit.matches],
                }
                for hit in results.hits
            ],
        }
        return Response(SearchOutput(body).data, headers={"x-cognitionos-request-id": request_id})
