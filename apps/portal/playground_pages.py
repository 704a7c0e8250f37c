"""The portal's playground (issue 12): a prompt against a model or a routing policy, answered as a
stream through the governed path (`chat_stream`, the function /v1 uses: routed, cached, budgeted,
rate-limited, metered and audited) as the signed-in member, and the same call shown as code.

The page posts its form (session and CSRF token, like any portal form) with fetch and reads the
answer as server-sent events:

    event: start  {"request_id", "model", "cache"}
    event: delta  {"text"}                       (as the model writes)
    event: end    {"request_id", "model", "prompt_tokens", "completion_tokens", "cost_usd", "cache",
                   "simulated", "latency_ms", "first_token_ms", "finish_reason",
                   and from the ledger "reserved_usd", "settled_usd", "saved_usd"}
    event: error  {"message"}                    (the provider's stream broke after it began)

A call refused before it starts (bad field, budget, rate limit, model, provider) is answered with
a JSON body {"error": {"message", "code", "field"}} and the refusal's status instead.
"""

from __future__ import annotations

import inspect
import json
import time
import uuid
from collections.abc import Generator, Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.llm.calls import (
    CHAT_POLICIES,
    CallSource,
    ChatModelChoice,
    ChatStream,
    LlmRefusal,
    budget_statuses,
    call_detail,
    chat_model_choices,
    llm_settings_get,
)
from apps.llm.gateway import stream_start
from apps.portal.caller import caller_organization, caller_principal, caller_user
from apps.portal.context_processors import platform_origin
from apps.portal.playground import (
    DEFAULT_MAX_TOKENS,
    MAX_TURNS,
    PromptInvalid,
    budget_headroom,
    prompt_cost_preview,
    prompt_parse,
    prompt_snippets,
)
from apps.rbac.decorators import member_may, permission_required
from apps.rbac.permissions import Permission
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization

POLICY_LABELS = {
    "cheapest": "Cheapest adequate model",
    "fastest": "Fastest model",
    "balanced": "Balanced (cost and speed)",
}


def _preselected(models: list[ChatModelChoice], default_policy: str) -> str:
    """The organization's default policy if it set one; else a real model when the platform has
    one (the least capable, so a first try costs little); the simulator otherwise, which works with
    no provider key at all."""
    if default_policy:
        return default_policy
    real = [model for model in models if not model.simulated]
    if real:
        return min(real, key=lambda model: (model.quality_tier, model.name)).name
    return models[0].name if models else ""


@permission_required(Permission.LLM_INVOKE)
@require_GET
def playground(request: HttpRequest) -> HttpResponse:
    organization = caller_organization(request)
    engine_settings = llm_settings_get(organization=organization)
    # Only what the organization allows (its model settings); the engine refuses the rest anyway.
    allowed = engine_settings.allowed_models
    models = [model for model in chat_model_choices(organization=organization) if not allowed or model.name in allowed]
    return render(
        request,
        "portal/playground/playground.html",
        {
            "organization": organization,
            "models": models,
            "policies": [(name, POLICY_LABELS.get(name, name)) for name in CHAT_POLICIES],
            "selected": _preselected(models, engine_settings.default_policy),
            "default_max_tokens": DEFAULT_MAX_TOKENS,
            "max_turns": MAX_TURNS,
            # What Django reads of a form body at most (larger is refused before any view): the
            # page checks the prompt against it before sending.
            "max_body_bytes": settings.DATA_UPLOAD_MAX_MEMORY_SIZE or "",
            # The answer links to its row in the request log, for those who may open it.
            "request_url": reverse("portal-request-detail", args=["REQUEST_ID"])
            if member_may(request, Permission.BUDGETS_READ)
            else "",
        },
    )


def _problem(status: int, message: str, code: str, field: str | None = None, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": {"message": message, "code": code, "field": field, **extra}}, status=status)


def _refused(refusal: LlmRefusal, field: str | None) -> JsonResponse:
    response = _problem(refusal.http_status, refusal.message, refusal.code, field, retryable=refusal.retryable)
    if refusal.retry_after_s is not None:
        response["Retry-After"] = str(refusal.retry_after_s)
    return response


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _close_stream(stream: ChatStream) -> None:
    """Close the engine's stream, which settles the attempt (from the reservation, if it didn't end).
    A generator that never started runs no `finally` when closed: it is started first (its first
    chunk is in memory already, no provider wait), so a page that left before the first byte is
    settled at once, not when its hold expires."""
    chunks = stream.chunks
    if inspect.isgenerator(chunks) and inspect.getgeneratorstate(chunks) == inspect.GEN_CREATED:
        next(chunks, None)
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


class _PageEvents:
    """The response's body: the page's events, and on close (the response ended, also before its
    first byte) the engine's stream closed."""

    def __init__(self, organization: Organization, stream: ChatStream, started: float) -> None:
        self._stream = stream
        self._events = _events(organization, stream, started)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self._events)

    def close(self) -> None:
        self._events.close()
        _close_stream(self._stream)


def _settled(organization: Organization, request_id: str) -> dict[str, str]:
    """What the ledger says of the call once it ended: reserved, settled, saved by the cache. A
    cache hit's row may be written a moment later (in batches): then there is nothing to add."""
    with organization_schema(organization):
        detail = call_detail(organization=organization, request_id=request_id)
    if detail is None:
        return {}
    return {
        "reserved_usd": str(detail.reserved_usd),
        "settled_usd": str(detail.cost_usd),
        "saved_usd": str(detail.saved_usd),
    }


def _events(organization: Organization, stream: ChatStream, started: float) -> Generator[bytes, None, None]:
    """The engine's chunks as the page's events."""
    model, usage, finish, first_token_ms = stream.model, None, None, None
    try:
        yield _event("start", {"request_id": stream.request_id, "model": stream.model, "cache": stream.cache})
        for chunk in stream.chunks:
            model = chunk.get("model") or model
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or ():
                text = (choice.get("delta") or {}).get("content")
                if text:
                    if first_token_ms is None:
                        first_token_ms = round((time.perf_counter() - started) * 1000, 1)
                    yield _event("delta", {"text": text})
                finish = choice.get("finish_reason") or finish
    finally:
        _close_stream(stream)
    if usage is None:
        # The relay ended without the provider's usage: the stream broke after it began, and the
        # attempt was charged its reservation (apps.llm.relay).
        yield _event("error", {"message": "The answer was cut off: the provider's stream broke. Try again."})
        return
    yield _event(
        "end",
        {
            "request_id": stream.request_id,
            "model": model,
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0),
            "cost_usd": usage.get("cost_usd", "0"),
            "cache": stream.cache,
            "simulated": stream.simulated,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "first_token_ms": first_token_ms,
            "finish_reason": finish,
            **_settled(organization, stream.request_id),
        },
    )


@permission_required({"POST": Permission.LLM_INVOKE})
@require_POST
@never_cache
def playground_run(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """Run the page's prompt as the member, streaming the answer as server-sent events."""
    started = time.perf_counter()
    organization = caller_organization(request)
    try:
        prompt, call = prompt_parse(request.POST)
    except PromptInvalid as invalid:
        return _problem(400, invalid.message, "invalid_field", invalid.field)
    try:
        # A long-response slot is taken first, as /v1 does: a stream over the process's cap is
        # refused (429) before anything is reserved or called.
        stream, slot = stream_start(
            organization=organization,
            principal=caller_principal(request),
            call=call,
            request_id=uuid.uuid4().hex,
            source=CallSource.PLAYGROUND,
        )
    except LlmRefusal as refusal:
        return _refused(refusal, prompt.field_of(refusal.param) if refusal.param else None)
    response = StreamingHttpResponse(
        slot.hold(_PageEvents(organization, stream, started)), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    response["x-cognitionos-request-id"] = stream.request_id
    response["x-cognitionos-cache"] = stream.cache
    return response


@permission_required({"POST": Permission.LLM_INVOKE})
@require_POST
def playground_preview(request: HttpRequest) -> HttpResponse:
    """What the prompt would cost, before it runs: expected, and the worst case the budget reserves."""
    try:
        prompt, call = prompt_parse(request.POST)
    except PromptInvalid as invalid:
        return _problem(400, invalid.message, "invalid_field", invalid.field)
    try:
        preview = prompt_cost_preview(call)
    except LlmRefusal as refusal:
        return _refused(refusal, prompt.field_of(refusal.param) if refusal.param else None)
    headroom = budget_headroom(budget_statuses(), user_id=caller_user(request).pk)
    return JsonResponse(
        {
            "model": preview.model,
            "expected_usd": str(preview.expected_usd),
            "expected_output_tokens": preview.expected_output_tokens,
            "worst_usd": str(preview.worst_usd),
            "worst_model": preview.worst_model,
            # The tightest hard budget it counts against: a reservation above what is left is refused.
            "budget": {"label": headroom.label, "remaining_usd": str(headroom.remaining_usd)} if headroom else None,
        }
    )


@permission_required({"POST": Permission.LLM_INVOKE})
@require_POST
def playground_code(request: HttpRequest) -> HttpResponse:
    """The page's prompt as code for the openai SDK, the anthropic SDK and curl (an HTML fragment)."""
    try:
        prompt, _call = prompt_parse(request.POST)
    except PromptInvalid as invalid:
        return _problem(400, invalid.message, "invalid_field", invalid.field)
    snippets = prompt_snippets(prompt, platform_url=platform_origin(request))
    keys_url = reverse("portal-keys") if member_may(request, Permission.KEYS_MANAGE) else ""
    return render(
        request, "portal/playground/_code.html", {"snippets": snippets, "prompt": prompt, "keys_url": keys_url}
    )


urlpatterns = [
    path("playground/", playground, name="portal-playground"),
    path("playground/run/", playground_run, name="portal-playground-run"),
    path("playground/code/", playground_code, name="portal-playground-code"),
    path("playground/preview/", playground_preview, name="portal-playground-preview"),
]
