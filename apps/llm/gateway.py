"""OpenAI-compatible endpoints, served on the platform host; the organization comes from the key.

Errors use OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any, NoReturn

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.principals import Principal
from apps.llm.calls import (
    CallSource,
    ChatCall,
    ChatOutcome,
    ChatStream,
    chat_call_parse,
    chat_complete,
    chat_stream,
    embeddings_create,
)
from apps.llm.errors import GatewayError
from apps.llm.platform.models import ModelKind
from apps.llm.platform.selectors import catalog
from apps.llm.refusals import LlmRefusal
from apps.llm.router import usable
from apps.llm.selectors import llm_settings_get
from apps.llm.services import provider_own_keys
from apps.rbac.permissions import Permission
from apps.tenants.models import Organization
from cognitionos.bounded_json import JsonTooDeep, json_loads_bounded
from cognitionos.long_responses import LongResponsesFull, Slot, long_response_begin


def stream_start(
    *, organization: Organization, principal: Principal, call: ChatCall, request_id: str, source: str = CallSource.OTHER
) -> tuple[ChatStream, Slot]:
    """Start a streamed answer holding one of the process's long-response slots, taken before the
    provider is called (a refused stream costs nothing); the response's body gives it back."""
    try:
        slot = long_response_begin()
    except LongResponsesFull as exc:
        raise LlmRefusal(429, "too_many_streams", str(exc), retryable=True, retry_after_s=int(exc.retry_after)) from exc
    try:
        stream = chat_stream(
            organization=organization, principal=principal, call=call, request_id=request_id, source=source
        )
        return stream, slot
    except BaseException:
        slot.give_back()
        raise


def outcome_response(outcome: ChatOutcome) -> JsonResponse:
    response = JsonResponse(outcome.body)
    response["x-cognitionos-request-id"] = outcome.request_id
    response["x-cognitionos-cost-usd"] = str(outcome.cost_usd)
    response["x-cognitionos-cache"] = outcome.cache
    if outcome.simulated:
        response["x-cognitionos-simulated"] = "true"
    return response


def _caller(request: HttpRequest) -> tuple[Organization, Principal]:
    organization = getattr(request, "tenant", None)
    principal = getattr(request, "principal", None)
    if organization is None or organization.is_public or principal is None:
        has_header = request.headers.get("Authorization", "").startswith("Bearer ") or "X-Api-Key" in request.headers
        raise LlmRefusal(
            401,
            "invalid_api_key",
            "invalid, revoked or missing API key"
            if has_header
            else "send your API key as `Authorization: Bearer <key>`",
        )
    held = principal.permissions or frozenset()
    if Permission.LLM_INVOKE.value not in held and Permission.ADMIN.value not in held:
        raise LlmRefusal(403, "insufficient_scope", "this API key lacks the `llm:invoke` scope")
    return organization, principal


def _not_a_number(name: str) -> NoReturn:
    # NaN and Infinity are not JSON: a provider would refuse them after we priced and reserved.
    raise ValueError(f"{name} is not a JSON number")


def _json_body(request: HttpRequest) -> Any:
    if request.content_type != "application/json":
        raise LlmRefusal(415, "unsupported_media_type", "send the body as application/json")
    limit = settings.LLM_MAX_REQUEST_BYTES
    too_large = LlmRefusal(413, "request_too_large", f"the body is over {limit} bytes")
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError as exc:
        raise LlmRefusal(400, "invalid_request", "the Content-Length header is not a number") from exc
    if length > limit:
        raise too_large
    # Read the stream ourselves, never past the limit (request.body has a lower limit of its own,
    # DATA_UPLOAD_MAX_MEMORY_SIZE, answered with Django's HTML page).
    data = request.read(limit + 1)
    if len(data) > limit:
        raise too_large
    try:
        return json_loads_bounded(data, parse_constant=_not_a_number)
    except JsonTooDeep as exc:
        raise LlmRefusal(400, "json_too_deep", f"the body is refused: {exc}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise LlmRefusal(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc


@csrf_exempt
@require_POST
def chat_completions(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    request_id = uuid.uuid4().hex
    try:
        organization, principal = _caller(request)
        call = chat_call_parse(_json_body(request))
        if call.stream:
            return _stream_response(organization, principal, call, request_id)
        outcome = chat_complete(
            organization=organization,
            principal=principal,
            call=call,
            request_id=request_id,
            source=CallSource.GATEWAY,
        )
    except LlmRefusal as refusal:
        return GatewayError(refusal).openai(request_id=request_id)
    return outcome_response(outcome)


def _stream_response(
    organization: Organization, principal: Principal, call: ChatCall, request_id: str
) -> StreamingHttpResponse:
    stream, slot = stream_start(
        organization=organization, principal=principal, call=call, request_id=request_id, source=CallSource.GATEWAY
    )

    def events() -> Iterator[bytes]:
        try:
            for chunk in stream.chunks:
                yield b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
        finally:
            close = getattr(stream.chunks, "close", None)
            if close is not None:
                close()  # settles the attempt even when the client went away mid-stream

    response = StreamingHttpResponse(slot.hold(events()), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    response["x-cognitionos-request-id"] = stream.request_id
    response["x-cognitionos-cache"] = stream.cache
    if stream.simulated:
        response["x-cognitionos-simulated"] = "true"
    return response


@csrf_exempt
@require_POST
def embeddings(request: HttpRequest) -> HttpResponse:
    request_id = uuid.uuid4().hex
    try:
        organization, principal = _caller(request)
        outcome = embeddings_create(
            organization=organization,
            principal=principal,
            body=_json_body(request),
            request_id=request_id,
            source=CallSource.EMBEDDINGS,
        )
    except LlmRefusal as refusal:
        return GatewayError(refusal).openai(request_id=request_id)
    return outcome_response(outcome)


@require_GET
def models(request: HttpRequest) -> HttpResponse:
    try:
        organization, _ = _caller(request)
    except LlmRefusal as refusal:
        return GatewayError(refusal).openai()
    own = frozenset(provider_own_keys(organization=organization))
    # A chat model the organization's settings don't allow is not offered (the engine refuses it).
    allowed = llm_settings_get(organization=organization).allowed_models
    data = [
        {
            "id": entry.model.name,
            "object": "model",
            "created": 0,
            "owned_by": "simulator (simulated answers)" if entry.model.is_simulated else entry.model.provider,
            "kind": entry.model.kind,
            "context_window": entry.model.context_window,
            "simulated": entry.model.is_simulated,
        }
        for entry in sorted(catalog().values(), key=lambda e: e.model.name)
        if usable(entry, own)
        and (
            entry.model.kind == ModelKind.EMBEDDING
            or (entry.model.kind == ModelKind.CHAT and (not allowed or entry.model.name in allowed))
        )
    ]
    return JsonResponse({"object": "list", "data": data})
