"""A call's prompt and answer as the request log keeps them (CallContent), bounded in size.

Built only when the organization's content policy keeps content; written by the statement that
settles the call (apps.llm.budgets) or with the cache hit's ledger row, never on a round trip of
its own."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from apps.llm.models import CALL_CONTENT_MAX_CHARS


@dataclass(frozen=True)
class ContentDraft:
    """What the settlement stores for the call `request_id` of the attempt it settles."""

    prompt: str
    answer: str
    truncated: bool


def _cut(text: str) -> tuple[str, bool]:
    if len(text) <= CALL_CONTENT_MAX_CHARS:
        return text, False
    return text[: CALL_CONTENT_MAX_CHARS - 1] + "…", True


def prompt_text(payload: dict[str, Any]) -> str:
    """The messages (and tools, if any) sent, as JSON (bounded by the request's own size limit;
    content_draft cuts it). Images' data URLs are kept out: large, and the log shows text. Stored
    compact, indented where it is read (readable_json): `indent` sends json.dumps to its pure-Python
    encoder, which cost a cache hit 8% of its CPU."""
    shown: dict[str, Any] = {"messages": [_without_images(m) for m in payload.get("messages") or []]}
    if payload.get("tools"):
        shown["tools"] = payload["tools"]
    return json.dumps(shown, ensure_ascii=False)


def readable_json(text: str) -> str:
    """Stored JSON indented for reading; the text as it is when it is not JSON (a prompt cut short)."""
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, indent=1)
    except (ValueError, RecursionError):
        return text


def _without_images(message: Any) -> Any:
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return message
    parts = [
        {"type": "image_url", "image_url": "(image not kept)"}
        if isinstance(part, dict) and part.get("type") == "image_url"
        else part
        for part in message["content"]
    ]
    return {**message, "content": parts}


def answer_text(body: dict[str, Any]) -> str:
    """The answer's text, or its tool calls as JSON, from a chat completion."""
    message = ((body.get("choices") or [{}])[0] or {}).get("message") or {}
    content = message.get("content")
    if isinstance(content, str) and content:
        return content
    if message.get("tool_calls"):
        return json.dumps({"tool_calls": message["tool_calls"]}, ensure_ascii=False, indent=1)
    return ""


def content_draft(*, prompt: str, answer: str) -> ContentDraft:
    kept_prompt, prompt_cut = _cut(prompt)
    kept_answer, answer_cut = _cut(answer)
    return ContentDraft(prompt=kept_prompt, answer=kept_answer, truncated=prompt_cut or answer_cut)
