"""The portal's knowledge base pages (issue 14): the list, create, settings (a change of embedding
model or dimensions asks first, then re-embeds in the background while search keeps answering from
the old vectors), delete; a knowledge base's page with its documents (upload, live status and
counts, a failed document's reason, cancel, resume, delete) and a search box whose results show
their scores and the matched words highlighted.

Thin: apps.knowledge's services, selectors and search do the work, as for the REST API; these pages
parse, check the role, call one of them and render. Seeing needs knowledge:read (searching too: it
is a read, though the query's embedding is a governed, metered call); changing needs
knowledge:write. Unfinished documents are refreshed by HTMX polling of one fragment for all of them
(`live/`, as the jobs list does), which also carries a re-embedding's progress.
"""

from __future__ import annotations

import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.billing.selectors import EntitlementRefused
from apps.knowledge.models import (
    DEFAULT_CHUNK_OVERLAP_TOKENS,
    DEFAULT_CHUNK_TOKENS,
    DEFAULT_DIMENSIONS,
    MAX_CHUNK_TOKENS,
    MIN_CHUNK_TOKENS,
    SUPPORTED_DIMENSIONS,
    ChunkEmbedding,
    Document,
    EmbeddingSet,
    KnowledgeBase,
)
from apps.knowledge.search import knowledge_search
from apps.knowledge.selectors import document_get, knowledge_base_get, knowledge_bases_list
from apps.knowledge.services import (
    PERMANENT_ERRORS,
    KnowledgeTooLarge,
    document_bytes_limit,
    document_cancel,
    document_delete,
    document_resume,
    document_upload,
    knowledge_base_create,
    knowledge_base_delete,
    knowledge_base_update,
)
from apps.llm.calls import embedding_model_choices
from apps.portal.caller import caller_organization, caller_principal
from apps.portal.form_fields import NON_FIELD, FieldSpec, bind, unplaced_errors
from apps.portal.paging import DEFAULT_PAGE_SIZE, keyset_page_by_time
from apps.rbac.decorators import member_may, permission_required
from apps.rbac.permissions import Permission
from apps.work.models import UNFINISHED, WorkStatus
from cognitionos.refusals import Refusal

READ = Permission.KNOWLEDGE_READ
WRITE = Permission.KNOWLEDGE_WRITE
LIVE_POLL_SECONDS = 2
# Files one upload form may carry (each is its own document, refused or queued on its own).
MAX_FILES_PER_UPLOAD = 20
DOCUMENTS_PAGE_SIZE = DEFAULT_PAGE_SIZE
# (value, label): hybrid fuses full text and vector similarity by reciprocal rank.
SEARCH_MODES = (("hybrid", "Hybrid"), ("vector", "Meaning (vector)"), ("text", "Words (text)"))
SEARCH_TOP_K_DEFAULT = 5
SEARCH_TOP_K_MAX = 50
SEARCH_QUERY_MAX_CHARS = 2000
ACCEPTED_FILES = ".txt,.md,.markdown,.html,.htm,.pdf,text/plain,text/markdown,text/html,application/pdf"


def _knowledge_base(request: HttpRequest, knowledge_base_id: uuid.UUID) -> KnowledgeBase:
    """The knowledge base with its document and chunk counts (the selector annotates them)."""
    try:
        return knowledge_base_get(organization=caller_organization(request), knowledge_base_id=knowledge_base_id)
    except Refusal as refused:  # another organization's knowledge base is absent from this schema
        if refused.http_status == 404:
            raise Http404("No such knowledge base.") from refused
        raise


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _size(value: int) -> str:
    """Bytes as people read them (1.5 MB)."""
    size = float(value)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}".replace(".0 ", " ")
        size /= 1024
    return f"{value} bytes"


# -- re-embedding --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reembedding:
    """A knowledge base's embedding set being built (or the last one that failed): what its page and
    the list say of it."""

    embedding_set: EmbeddingSet
    embedded: int
    total: int

    @property
    def building(self) -> bool:
        return self.embedding_set.status in UNFINISHED

    @property
    def percent(self) -> int:
        return 100 if not self.total else min(100, round(100 * self.embedded / self.total))


def _reembeddings(knowledge_bases: list[KnowledgeBase]) -> dict[uuid.UUID, Reembedding]:
    """For each knowledge base whose newest embedding set is not its active one, that set if it is
    being built or failed (what its page then reports). Two queries, whatever the number of
    bases; `chunk_count` (annotated) is what a new set has to embed."""
    if not knowledge_bases:
        return {}
    newest = (
        EmbeddingSet.objects.filter(knowledge_base_id__in=[kb.pk for kb in knowledge_bases])
        .order_by("knowledge_base_id", "-created_at", "-pk")
        .distinct("knowledge_base_id")
    )
    bases = {kb.pk: kb for kb in knowledge_bases}
    # A failed build is reported while the base still asks for its model (a change back, which
    # cancels a build, is not a failure to report).
    shown = {
        s.knowledge_base_id: s
        for s in newest
        if s.pk != bases[s.knowledge_base_id].active_set_id
        and (
            s.status in UNFINISHED
            or (
                s.status == WorkStatus.FAILED
                and (s.embedding_model, s.dimensions)
                == (bases[s.knowledge_base_id].embedding_model, bases[s.knowledge_base_id].dimensions)
            )
        )
    }
    if not shown:
        return {}
    counts = dict(
        ChunkEmbedding.objects.filter(embedding_set__in=[s.pk for s in shown.values()])
        .values("embedding_set")
        .annotate(n=Count("pk"))
        .values_list("embedding_set", "n")
    )
    totals = {kb.pk: int(getattr(kb, "chunk_count", 0) or 0) for kb in knowledge_bases}
    return {
        kb_id: Reembedding(embedding_set=s, embedded=counts.get(s.pk, 0), total=totals.get(kb_id, 0))
        for kb_id, s in shown.items()
    }


# -- the list ------------------------------------------------------------------------------------


@permission_required(READ)
@never_cache
@require_GET
def knowledge_bases(request: HttpRequest) -> HttpResponse:
    organization = caller_organization(request)
    listed = list(knowledge_bases_list(organization=organization))
    reembedding = _reembeddings(listed)
    return render(
        request,
        "portal/knowledge/list.html",
        {
            "organization": organization,
            "rows": [{"kb": kb, "reembedding": reembedding.get(kb.pk)} for kb in listed],
            "may_write": member_may(request, WRITE),
        },
    )


# -- create and settings -------------------------------------------------------------------------


def _model_options(request: HttpRequest, current: str = "") -> tuple[tuple[str, str], ...]:
    choices = embedding_model_choices(organization=caller_organization(request))
    options = [
        (
            choice.name,
            f"{choice.name} ({choice.embedding_dimensions:,} dimensions{', simulated' if choice.simulated else ''})",
        )
        for choice in choices
    ]
    if current and current not in {name for name, _ in options}:
        options.insert(0, (current, f"{current} (no longer available)"))
    return tuple(options)


def _specs(request: HttpRequest, *, knowledge_base: KnowledgeBase | None) -> list[FieldSpec]:
    specs = [
        FieldSpec(
            "name", "Name", help="Unique in the organization.", attrs={"maxlength": "100", "autocomplete": "off"}
        ),
        FieldSpec("description", "Description (optional)", kind="textarea", attrs={"rows": "2", "maxlength": "500"}),
        FieldSpec(
            "embedding_model",
            "Embedding model",
            kind="select",
            help="Documents and queries are embedded with it, through the governed path "
            "(budgets and the ledger apply).",
            options=_model_options(request, knowledge_base.embedding_model if knowledge_base else ""),
        ),
        FieldSpec(
            "dimensions",
            "Dimensions",
            kind="select",
            help="Vectors are asked for at this size (text-embedding-3's `dimensions`); "
            "larger ones are reduced. Supported: " + ", ".join(f"{d:,}" for d in SUPPORTED_DIMENSIONS) + ".",
            options=tuple((str(d), f"{d:,}") for d in SUPPORTED_DIMENSIONS),
        ),
    ]
    if knowledge_base is None:  # chunking is set when the knowledge base is made
        specs += [
            FieldSpec(
                "chunk_tokens",
                "Chunk size (tokens)",
                kind="number",
                help=f"{MIN_CHUNK_TOKENS} to {MAX_CHUNK_TOKENS:,}",
                attrs={"min": str(MIN_CHUNK_TOKENS), "max": str(MAX_CHUNK_TOKENS), "step": "1"},
            ),
            FieldSpec(
                "chunk_overlap_tokens",
                "Chunk overlap (tokens)",
                kind="number",
                help="0 to half the chunk size",
                attrs={"min": "0", "max": str(MAX_CHUNK_TOKENS // 2), "step": "1"},
            ),
        ]
    return specs


_NUMBERS = ("chunk_tokens", "chunk_overlap_tokens")


def _values_of(knowledge_base: KnowledgeBase | None, request: HttpRequest) -> dict[str, Any]:
    if knowledge_base is None:
        options = _model_options(request)
        return {
            "embedding_model": options[0][0] if options else "",
            "dimensions": DEFAULT_DIMENSIONS,
            "chunk_tokens": DEFAULT_CHUNK_TOKENS,
            "chunk_overlap_tokens": DEFAULT_CHUNK_OVERLAP_TOKENS,
        }
    return {
        "name": knowledge_base.name,
        "description": knowledge_base.description,
        "embedding_model": knowledge_base.embedding_model,
        "dimensions": knowledge_base.dimensions,
    }


def _parsed(values: dict[str, str], errors: dict[str, list[str]]) -> dict[str, Any]:
    """The form's values as the services take them; what can't be read is said at its field."""
    fields: dict[str, Any] = {}
    if not values.get("name", "").strip():
        errors.setdefault("name", []).append("Give the knowledge base a name.")
    else:
        fields["name"] = values["name"].strip()
    fields["description"] = values.get("description", "").strip()
    if values.get("embedding_model"):
        fields["embedding_model"] = values["embedding_model"]
    for name in ("dimensions", *_NUMBERS):
        if name not in values:
            continue
        text = values[name].strip()
        if not text:
            if name == "dimensions":
                errors.setdefault(name, []).append("Choose a number of dimensions.")
            continue
        try:
            fields[name] = int(text)
        except ValueError:
            errors.setdefault(name, []).append("A whole number.")
    chunk, overlap = fields.get("chunk_tokens"), fields.get("chunk_overlap_tokens")
    if chunk is not None and not MIN_CHUNK_TOKENS <= chunk <= MAX_CHUNK_TOKENS:
        errors.setdefault("chunk_tokens", []).append(f"From {MIN_CHUNK_TOKENS} to {MAX_CHUNK_TOKENS:,} tokens.")
    if overlap is not None and (overlap < 0 or (chunk is not None and overlap > chunk // 2)):
        errors.setdefault("chunk_overlap_tokens", []).append("From 0 to half the chunk size.")
    if fields.get("dimensions") is not None and fields["dimensions"] not in SUPPORTED_DIMENSIONS:
        errors.setdefault("dimensions", []).append("Choose one of the supported sizes.")
    return fields


def _refused_at_field(refused: Refusal, names: list[str], errors: dict[str, list[str]]) -> None:
    field = refused.param if refused.param in names else NON_FIELD
    errors.setdefault(field, []).append(refused.request_message())


def _form_page(
    request: HttpRequest,
    *,
    knowledge_base: KnowledgeBase | None,
    values: dict[str, Any],
    errors: dict[str, list[str]],
    status: int,
) -> HttpResponse:
    specs = _specs(request, knowledge_base=knowledge_base)
    fields = bind(specs, values, errors)
    return render(
        request,
        "portal/knowledge/form.html",
        {
            "organization": caller_organization(request),
            "knowledge_base": knowledge_base,
            "fields": [field for field in fields if field.spec.kind != "number"],
            "number_fields": [field for field in fields if field.spec.kind == "number"],
            "form_errors": unplaced_errors(specs, errors),
            "no_models": not _model_options(request),
            "may_write": member_may(request, WRITE),
        },
        status=status,
    )


@permission_required(WRITE)
@never_cache
def knowledge_base_create_page(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _form_page(request, knowledge_base=None, values=_values_of(None, request), errors={}, status=200)
    names = [spec.name for spec in _specs(request, knowledge_base=None)]
    values = {name: request.POST.get(name, "") for name in names}
    errors: dict[str, list[str]] = {}
    fields = _parsed(values, errors)
    if not errors:
        try:
            knowledge_base = knowledge_base_create(
                organization=caller_organization(request), principal=caller_principal(request), **fields
            )
        except Refusal as refused:  # a name taken, a model the catalog refuses: said at the field
            _refused_at_field(refused, names, errors)
        else:
            messages.success(request, f"Knowledge base “{knowledge_base.name}” created: upload its documents below.")
            return redirect("portal-knowledge-base", knowledge_base_id=knowledge_base.pk)
    return _form_page(request, knowledge_base=None, values=values, errors=errors, status=400)


@permission_required({"GET": READ, "POST": WRITE})
@never_cache
def knowledge_base_settings(request: HttpRequest, knowledge_base_id: uuid.UUID) -> HttpResponse:
    """Its settings (a member who may change knowledge bases edits them here). A new embedding
    model or dimension count re-embeds every chunk: the page asks first, with what it means."""
    knowledge_base = _knowledge_base(request, knowledge_base_id)
    if request.method != "POST":
        return _form_page(
            request, knowledge_base=knowledge_base, values=_values_of(knowledge_base, request), errors={}, status=200
        )
    names = [spec.name for spec in _specs(request, knowledge_base=knowledge_base)]
    values = {name: request.POST.get(name, "") for name in names}
    errors: dict[str, list[str]] = {}
    fields = _parsed(values, errors)
    if errors:
        return _form_page(request, knowledge_base=knowledge_base, values=values, errors=errors, status=400)
    reembeds = fields.get("embedding_model", knowledge_base.embedding_model) != knowledge_base.embedding_model or (
        fields.get("dimensions", knowledge_base.dimensions) != knowledge_base.dimensions
    )
    if reembeds and request.POST.get("confirm") != "reembed":
        return render(
            request,
            "portal/knowledge/confirm_reembed.html",
            {
                "organization": caller_organization(request),
                "knowledge_base": knowledge_base,
                "values": values,
                "chunk_count": getattr(knowledge_base, "chunk_count", None),
            },
        )
    try:
        knowledge_base = knowledge_base_update(
            organization=caller_organization(request),
            principal=caller_principal(request),
            knowledge_base=knowledge_base,
            name=fields.get("name"),
            description=fields.get("description"),
            embedding_model=fields.get("embedding_model") if reembeds else None,
            dimensions=fields.get("dimensions") if reembeds else None,
        )
    except Refusal as refused:
        _refused_at_field(refused, names, errors)
        return _form_page(request, knowledge_base=knowledge_base, values=values, errors=errors, status=400)
    if reembeds:
        messages.success(
            request,
            "Re-embedding started: search keeps answering from the current vectors until the new ones are ready.",
        )
    else:
        messages.success(request, f"Knowledge base “{knowledge_base.name}” saved.")
    return redirect("portal-knowledge-base", knowledge_base_id=knowledge_base.pk)


@permission_required({"POST": WRITE})
@require_POST
def knowledge_base_delete_page(request: HttpRequest, knowledge_base_id: uuid.UUID) -> HttpResponse:
    """Deletes it with its documents, chunks and vectors (the form asks first: data-confirm)."""
    knowledge_base = _knowledge_base(request, knowledge_base_id)
    name = knowledge_base.name
    knowledge_base_delete(
        organization=caller_organization(request), principal=caller_principal(request), knowledge_base=knowledge_base
    )
    messages.success(request, f"Knowledge base “{name}” deleted, with its documents.")
    return redirect("portal-knowledge")


# -- a knowledge base's page ---------------------------------------------------------------------


def _live_query(knowledge_base: KnowledgeBase, documents: list[Document], reembedding: Reembedding | None) -> str:
    """The live fragment's query: the unfinished documents shown, and whether a re-embedding is
    followed (nothing: nothing to poll)."""
    pairs = [("id", str(document.pk)) for document in documents if not document.is_finished]
    if reembedding is not None and reembedding.building:
        pairs.append(("set", str(reembedding.embedding_set.pk)))
    return urllib.parse.urlencode(pairs)


def _search_context(
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, list[str]] | None = None,
    results: Any = None,
    searched: bool = False,
) -> dict[str, Any]:
    values = values or {"query": "", "mode": "hybrid", "top_k": str(SEARCH_TOP_K_DEFAULT)}
    return {
        "search_values": values,
        "search_errors": errors or {},
        "search_modes": SEARCH_MODES,
        "search_top_k_max": SEARCH_TOP_K_MAX,
        "search_query_max": SEARCH_QUERY_MAX_CHARS,
        "results": results,
        "hits": [_hit(hit) for hit in results.hits] if results is not None else [],
        "searched": searched,
    }


def _page_context(request: HttpRequest, knowledge_base: KnowledgeBase) -> dict[str, Any]:
    organization = caller_organization(request)
    page = keyset_page_by_time(
        Document.objects.filter(knowledge_base=knowledge_base), request=request, size=DOCUMENTS_PAGE_SIZE
    )
    reembedding = _reembeddings([knowledge_base]).get(knowledge_base.pk)
    limit = document_bytes_limit(organization)
    return {
        "organization": organization,
        "knowledge_base": knowledge_base,
        "page": page,
        "documents": page.items,
        "reembedding": reembedding,
        "live_query": _live_query(knowledge_base, page.items, reembedding),
        "live_poll_seconds": LIVE_POLL_SECONDS,
        "may_write": member_may(request, WRITE),
        "upload_limit": _size(limit) if limit else "",
        "max_files": MAX_FILES_PER_UPLOAD,
        "accepted_files": ACCEPTED_FILES,
        "upload_errors": [],
        "unresumable": PERMANENT_ERRORS,
        **_search_context(),
    }


@permission_required(READ)
@never_cache
@require_GET
def knowledge_base_page(request: HttpRequest, knowledge_base_id: uuid.UUID) -> HttpResponse:
    knowledge_base = _knowledge_base(request, knowledge_base_id)
    return render(request, "portal/knowledge/detail.html", _page_context(request, knowledge_base))


@permission_required(READ)
@never_cache
@require_GET
def knowledge_base_live(request: HttpRequest, knowledge_base_id: uuid.UUID) -> HttpResponse:
    """The rows of the documents the page shows as unfinished, re-read (one query), swapped in place
    by HTMX, and a re-embedding's progress; it keeps polling while any of them is unfinished."""
    knowledge_base = _knowledge_base(request, knowledge_base_id)
    ids: list[uuid.UUID] = []
    for value in request.GET.getlist("id")[:DOCUMENTS_PAGE_SIZE]:
        try:
            ids.append(uuid.UUID(value))
        except ValueError:
            continue
    found = {document.pk: document for document in Document.objects.filter(knowledge_base=knowledge_base, pk__in=ids)}
    documents = [found[document_id] for document_id in ids if document_id in found]
    reembedding = _reembeddings([knowledge_base]).get(knowledge_base.pk) if request.GET.get("set") else None
    return render(
        request,
        "portal/knowledge/_live.html",
        {
            "knowledge_base": knowledge_base,
            "documents": documents,
            "reembedding": reembedding,
            "follow_reembedding": bool(request.GET.get("set")),
            "unresumable": PERMANENT_ERRORS,
            "live_query": _live_query(knowledge_base, documents, reembedding),
            "live_poll_seconds": LIVE_POLL_SECONDS,
            "may_write": member_may(request, WRITE),
        },
    )


@dataclass(frozen=True)
class UploadError:
    """A reason shown at the upload field; `plan` when the plan refused it (over the plan's size, at
    its chunk limit): the template adds "See plans" where the member may open the plan page
    (`portal_billing_url`, as on every plan refusal of the portal)."""

    message: str
    plan: bool = False


@permission_required({"POST": WRITE})
@require_POST
def documents_upload_page(request: HttpRequest, knowledge_base_id: uuid.UUID) -> HttpResponse:
    """Each file becomes a document, queued for ingestion; a file refused (unsupported, empty, too
    large) is named with its reason at the upload field, and the others are still queued."""
    knowledge_base = _knowledge_base(request, knowledge_base_id)
    organization = caller_organization(request)
    files = request.FILES.getlist("files")
    errors: list[UploadError] = []
    if not files:
        errors.append(UploadError("Choose one or more files to upload."))
    if len(files) > MAX_FILES_PER_UPLOAD:
        errors.append(
            UploadError(f"At most {MAX_FILES_PER_UPLOAD} files at once: the first {MAX_FILES_PER_UPLOAD} were taken.")
        )
        files = files[:MAX_FILES_PER_UPLOAD]
    limit = document_bytes_limit(organization)
    queued: list[Document] = []
    for upload in files:
        if limit and upload.size is not None and upload.size > limit:
            errors.append(
                UploadError(
                    f"{upload.name}: {_size(upload.size)} is over your plan's limit of {_size(limit)} a document.",
                    plan=True,
                )
            )
            continue
        try:
            queued.append(
                document_upload(
                    organization=organization,
                    principal=caller_principal(request),
                    knowledge_base=knowledge_base,
                    filename=upload.name or "upload",
                    content_type=upload.content_type,
                    content=upload.read(),
                )
            )
        except Refusal as refused:
            plan = isinstance(refused, KnowledgeTooLarge | EntitlementRefused)
            errors.append(UploadError(f"{upload.name}: {refused.request_message()}", plan=plan))
    if queued:
        names = ", ".join(f"“{document.filename}”" for document in queued[:3]) + ("…" if len(queued) > 3 else "")
        messages.success(
            request, f"{len(queued)} document{'s' if len(queued) != 1 else ''} queued ({names}): progress shows below."
        )
    if not errors:
        return redirect("portal-knowledge-base", knowledge_base_id=knowledge_base.pk)
    context = _page_context(request, knowledge_base)
    context["upload_errors"] = errors
    return render(request, "portal/knowledge/detail.html", context, status=400)


def _document(knowledge_base: KnowledgeBase, document_id: uuid.UUID) -> Document:
    try:
        return document_get(knowledge_base=knowledge_base, document_id=document_id)
    except Refusal as refused:
        if refused.http_status == 404:
            raise Http404("No such document.") from refused
        raise


def _document_action(
    request: HttpRequest, knowledge_base_id: uuid.UUID, document_id: uuid.UUID, action: str
) -> HttpResponse:
    knowledge_base = _knowledge_base(request, knowledge_base_id)
    document = _document(knowledge_base, document_id)
    actions = {"cancel": document_cancel, "resume": document_resume, "delete": document_delete}
    said = {
        "cancel": f"Ingestion of “{document.filename}” cancelled: resume it to continue where it stopped.",
        "resume": f"“{document.filename}” queued again: it continues where it stopped.",
        "delete": f"“{document.filename}” deleted, with its chunks and vectors.",
    }
    try:
        actions[action](
            organization=caller_organization(request), principal=caller_principal(request), document=document
        )
    except Refusal as refused:  # not in a state for it (finished meanwhile...): said, nothing done
        messages.warning(request, f"“{document.filename}”: {refused.request_message()}")
    else:
        messages.success(request, said[action])
    return redirect("portal-knowledge-base", knowledge_base_id=knowledge_base.pk)


@permission_required({"POST": WRITE})
@require_POST
def document_cancel_page(request: HttpRequest, knowledge_base_id: uuid.UUID, document_id: uuid.UUID) -> HttpResponse:
    return _document_action(request, knowledge_base_id, document_id, "cancel")


@permission_required({"POST": WRITE})
@require_POST
def document_resume_page(request: HttpRequest, knowledge_base_id: uuid.UUID, document_id: uuid.UUID) -> HttpResponse:
    return _document_action(request, knowledge_base_id, document_id, "resume")


@permission_required({"POST": WRITE})
@require_POST
def document_delete_page(request: HttpRequest, knowledge_base_id: uuid.UUID, document_id: uuid.UUID) -> HttpResponse:
    return _document_action(request, knowledge_base_id, document_id, "delete")


# -- search --------------------------------------------------------------------------------------


def highlighted(text: str, matches: Any) -> list[tuple[str, bool]]:
    """`text` cut into pieces, each marked or not, from the matches' character offsets (sorted,
    clipped to the text, overlaps merged). The template escapes every piece: a chunk's text is the
    uploader's, never trusted as HTML."""
    pieces: list[tuple[str, bool]] = []
    at = 0
    for first, last in sorted((int(s), int(e)) for s, e in (matches or ())):
        start, end = max(first, at, 0), min(last, len(text))
        if end <= start:
            continue
        if start > at:
            pieces.append((text[at:start], False))
        if pieces and pieces[-1][1] and start == at:  # touching the previous match: one mark
            pieces[-1] = (pieces[-1][0] + text[start:end], True)
        else:
            pieces.append((text[start:end], True))
        at = end
    if at < len(text):
        pieces.append((text[at:], False))
    return pieces


def _hit(hit: Any) -> dict[str, Any]:
    return {
        "hit": hit,
        "pieces": highlighted(hit.text, hit.matches),
        "headings": [part.strip() for part in (hit.heading_path or "").split(" / ") if part.strip()],
    }


@permission_required({"GET": READ, "POST": READ})
@never_cache
def knowledge_search_page(request: HttpRequest, knowledge_base_id: uuid.UUID) -> HttpResponse:
    """Search the knowledge base (POST: the query's embedding is a metered call, never made by a
    link or a prefetch). From HTMX, the search section alone comes back (always 200, so HTMX swaps
    it, errors shown at their fields); otherwise the whole page."""
    if request.method != "POST":
        return redirect("portal-knowledge-base", knowledge_base_id=knowledge_base_id)
    knowledge_base = _knowledge_base(request, knowledge_base_id)
    values = {
        "query": request.POST.get("query", ""),
        "mode": request.POST.get("mode", "hybrid"),
        "top_k": request.POST.get("top_k", str(SEARCH_TOP_K_DEFAULT)).strip(),
    }
    errors: dict[str, list[str]] = {}
    if not values["query"].strip():
        errors["query"] = ["Write what to search for."]
    elif len(values["query"]) > SEARCH_QUERY_MAX_CHARS:
        errors["query"] = [f"At most {SEARCH_QUERY_MAX_CHARS:,} characters."]
    if values["mode"] not in {mode for mode, _ in SEARCH_MODES}:
        errors["mode"] = ["Choose hybrid, vector or text."]
    top_k = SEARCH_TOP_K_DEFAULT
    try:
        top_k = int(values["top_k"] or SEARCH_TOP_K_DEFAULT)
    except ValueError:
        errors["top_k"] = ["A whole number."]
    else:
        if not 1 <= top_k <= SEARCH_TOP_K_MAX:
            errors["top_k"] = [f"From 1 to {SEARCH_TOP_K_MAX}."]
    results = None
    if not errors:
        try:
            results = knowledge_search(
                organization=caller_organization(request),
                principal=caller_principal(request),
                knowledge_base=knowledge_base,
                query=values["query"],
                top_k=top_k,
                mode=values["mode"],  # type: ignore[arg-type]
                request_id=f"portal-search-{uuid.uuid4().hex}",
            )
        except Refusal as refused:  # a budget reached, no embedding model: said above the results
            field = refused.param if refused.param in values else NON_FIELD
            errors.setdefault(field, []).append(refused.request_message())
    search = _search_context(values=values, errors=errors, results=results, searched=True)
    if _is_htmx(request):
        return render(
            request,
            "portal/knowledge/_search.html",
            {"knowledge_base": knowledge_base, **search},
        )
    context = {**_page_context(request, knowledge_base), **search}
    return render(request, "portal/knowledge/detail.html", context, status=400 if errors else 200)


urlpatterns: list[URLPattern] = [
    path("knowledge/", knowledge_bases, name="portal-knowledge"),
    path("knowledge/new/", knowledge_base_create_page, name="portal-knowledge-create"),
    path("knowledge/<uuid:knowledge_base_id>/", knowledge_base_page, name="portal-knowledge-base"),
    path("knowledge/<uuid:knowledge_base_id>/live/", knowledge_base_live, name="portal-knowledge-live"),
    path("knowledge/<uuid:knowledge_base_id>/settings/", knowledge_base_settings, name="portal-knowledge-settings"),
    path("knowledge/<uuid:knowledge_base_id>/delete/", knowledge_base_delete_page, name="portal-knowledge-delete"),
    path("knowledge/<uuid:knowledge_base_id>/upload/", documents_upload_page, name="portal-knowledge-upload"),
    path("knowledge/<uuid:knowledge_base_id>/search/", knowledge_search_page, name="portal-knowledge-search"),
    path(
        "knowledge/<uuid:knowledge_base_id>/documents/<uuid:document_id>/cancel/",
        document_cancel_page,
        name="portal-knowledge-document-cancel",
    ),
    path(
        "knowledge/<uuid:knowledge_base_id>/documents/<uuid:document_id>/resume/",
        document_resume_page,
        name="portal-knowledge-document-resume",
    ),
    path(
        "knowledge/<uuid:knowledge_base_id>/documents/<uuid:document_id>/delete/",
        document_delete_page,
        name="portal-knowledge-document-delete",
    ),
]
