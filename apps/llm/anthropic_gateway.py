"""`POST /v1/messages` in Anthropic's shape, over the same governed engine as the OpenAI endpoints."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from apps.llm.calls import CallSource, chat_call_parse, chat_complete
from apps.llm.errors import GatewayError
from apps.llm.gateway import _caller, _json_body, stream_start
from apps.llm.refusals import LlmRefusal, invalid, unsupported
from apps.llm.validation import EXTENSIONS

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


# The Messages API fields we translate; anything else (top_k, thinking, container, mcp_servers...) is
# refused by name, as unknown OpenAI fields are: the engine forwards only what it prices.
_FIELDS = frozenset(
    {"model", "messages", "max_tokens", "system", "stream", "temperature", "top_p", "stop_sequences", "tools"}
    | {"tool_choice", "metadata"}
    | EXTENSIONS
)
_BLOCKS = {"user": frozenset({"text", "image", "tool_result"}), "assistant": frozenset({"text", "tool_use"})}


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") not in ("base64", "url"):
        raise invalid(f"{where}.source must be a base64 or url source", f"{where}.source")
    url = source.get("url") or f"data:{source.get('media_type')};base64,{source.get('data')}"
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return json.dumps(content)


def _message(role: Any, content: Any, where: str) -> list[dict[str, Any]]:
    """One Messages API message as OpenAI messages: an assistant's tool_use blocks become its
    tool_calls, a user's tool_result blocks become `tool` messages ahead of the user's own content."""
    if role not in _BLOCKS:
        raise invalid(f"{where}.role must be user or assistant", f"{where}.role")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise invalid(f"{where}.content must be a string or an array of content blocks", f"{where}.content")
    parts: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for number, block in enumerate(content):
        at = f"{where}.content[{number}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in _BLOCKS[role]:
            raise unsupported(f"{at}.type", f"{role} content blocks of type {kind!r} are not supported")
        assert isinstance(block, dict)
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image(block, at))
        elif kind == "tool_result":
            text = _tool_result_text(block.get("content"))
            results.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text})
        else:
            arguments = json.dumps(block.get("input") or {})
            calls.append(
                {
                    "id": str(block.get("id", "")),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
    converted: list[dict[str, Any]] = results
    if role == "assistant":
        text = "".join(part["text"] for part in parts)
        converted.append({"role": "assistant", "content": text or None, **({"tool_calls": calls} if calls else {})})
    elif parts:
        converted.append({"role": "user", "content": parts})
    return converted


def _tool_choice(choice: Any) -> Any:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "tool" and isinstance(choice, dict):
        return {"type": "function", "function": {"name": choice.get("name")}}
    if kind in ("auto", "any", "none"):
        return {"auto": "auto", "any": "required", "none": "none"}[kind]
    raise invalid('`tool_choice` must be {"type": "auto" | "any" | "none" | "tool"}', "tool_choice")


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        if not isinstance(system, str | list):
            raise invalid("`system` must be a string or an array of text blocks", "system")
        blocks = system if isinstance(system, list) else [{"text": system}]
        messages.append(
            {"role": "system", "content": " ".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict))}
        )
    raw = body.get("messages")
    if not isinstance(raw, list):
        raise invalid("`messages` must be an array", "messages")
    for index, message in enumerate(raw):
        if not isinstance(message, dict) or set(message) - {"role", "content"}:
            raise invalid(f"messages[{index}] must be an object with `role` and `content`", f"messages[{index}]")
        messages.extend(_message(message.get("role"), message.get("content"), f"messages[{index}]"))
    return messages


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise invalid("`tools` must be an array of tools", "tools")
    return [
        {
            "type": "function",
            "function": {
                "name": t.get("name"),
                "description": t.get("description", ""),
                "parameters": t.get("input_schema") or {},
            },
        }
        for t in tools
    ]


def openai_body(body: Any) -> dict[str, Any]:
    """A Messages API request as the engine's OpenAI-shaped request, built field by field; the engine
    then checks every value as it does for the OpenAI endpoints."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    for name in body:
        if name not in _FIELDS:
            raise unsupported(name)
    if not isinstance(body.get("max_tokens"), int):
        raise invalid("`max_tokens` is required", "max_tokens")
    converted: dict[str, Any] = {name: body[name] for name in EXTENSIONS if name in body}
    converted.update(
        {
            "model": body.get("model"),
            "messages": _messages(body),
            "max_tokens": body["max_tokens"],
            "stream": body.get("stream", False),
        }
    )
    for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("stop", "stop_sequences")):
        if theirs in body:
            converted[ours] = body[theirs]
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or set(metadata) - {"user_id"}:
            raise unsupported("metadata", "only `metadata.user_id` is accepted")
        if "user_id" in metadata:
            converted["user"] = metadata["user_id"]
    if "tool_choice" in body:
        converted["tool_choice"] = _tool_choice(body["tool_choice"])
    if body.get("tools"):
        converted["tools"] = _tools(body["tools"])
    return converted


def anthropic_message(body: dict[str, Any], request_id: str) -> dict[str, Any]:
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        content.append(
            {
                "type": "tool_use",
                "id": call["id"],
                "name": call["function"]["name"],
                "input": json.loads(call["function"].get("arguments") or "{}"),
            }
        )
    usage = body.get("usage") or {}
    return {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": content,
        "stop_reason": _STOP.get(choice.get("finish_reason") or "", "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": usage.get("prompt_tokens", 0), "output_tokens": usage.get("completion_tokens", 0)},
    }


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data}, separators=(',', ':'))}\n\n".encode()


@csrf_exempt
@require_POST
def messages(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    request_id = uuid.uuid4().hex
    try:
        organization, principal = _caller(request)
        call = chat_call_parse(openai_body(_json_body(request)))
        if call.stream:
            stream, slot = stream_start(
                organization=organization,
                principal=principal,
                call=call,
                request_id=request_id,
                source=CallSource.MESSAGES,
            )
        else:
            outcome = chat_complete(
                organization=organization,
                principal=principal,
                call=call,
                request_id=request_id,
                source=CallSource.MESSAGES,
            )
    except LlmRefusal as refusal:
        return GatewayError(refusal).anthropic(request_id=request_id)
    if not call.stream:
        response = JsonResponse(anthropic_message(outcome.body, outcome.request_id))
        response["x-cognitionos-cost-usd"] = str(outcome.cost_usd)
        response["x-cognitionos-cache"] = outcome.cache
        response["x-cognitionos-request-id"] = outcome.request_id
        return response

    def events() -> Iterator[bytes]:
        model = stream.model
        yield _event(
            "message_start",
            {
                "message": {
                    "id": f"msg_{request_id}",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                }
            },
        )
        yield _event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        stop, usage = "end_turn", {"output_tokens": 0}
        try:
            for chunk in stream.chunks:
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield _event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}})
                    if choice.get("finish_reason"):
                        stop = _STOP.get(choice["finish_reason"], "end_turn")
                if chunk.get("usage"):
                    usage = {
                        "output_tokens": chunk["usage"]["completion_tokens"],
                        "cost_usd": chunk["usage"]["cost_usd"],
                    }
        finally:
            close = getattr(stream.chunks, "close", None)
            if close is not None:
                close()
        yield _event("content_block_stop", {"index": 0})
        yield _event("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": usage})
        yield _event("message_stop", {})

    streaming = StreamingHttpResponse(slot.hold(events()), content_type="text/event-stream")
    streaming["Cache-Control"] = "no-cache"
    streaming["x-cognitionos-request-id"] = request_id
    streaming["x-cognitionos-cache"] = stream.cache
    return streaming
