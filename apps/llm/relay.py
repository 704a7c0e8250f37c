"""Stream relay: a provider's stream passed on chunk by chunk and settled when it ends, breaks or
is abandoned; and a cached answer replayed as the chunks a provider would have streamed."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from apps.llm.attempts import Attempts
from apps.llm.budgets import Settlement, attempt_settle
from apps.llm.content import content_draft
from apps.llm.models import AttemptStatus, UsageAttempt
from apps.llm.platform.selectors import PricedModel
from apps.llm.pricing import success_settlement
from apps.llm.providers import ProviderError, StreamChunk, Usage


def replay(body: dict[str, Any], request_id: str) -> Iterator[dict[str, Any]]:
    """A cached chat completion as the chunks a provider would have streamed, then the usage chunk
    (the answer's tokens, at no cost)."""
    base = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": body.get("created", int(time.time())),
        "model": body.get("model"),
    }
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": ""})
    if message.get("content"):
        yield chunk({"content": message["content"]})
    if message.get("tool_calls"):
        yield chunk({"tool_calls": [{**call, "index": i} for i, call in enumerate(message["tool_calls"])]})
    yield chunk({}, choice.get("finish_reason") or "stop")
    usage = body.get("usage") or {}
    yield {
        **base,
        "choices": [],
        "usage": {
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0),
            "total_tokens": usage.get("total_tokens", 0),
            "cost_usd": "0",
        },
    }


class _Transcript:
    """A streamed answer put back together as a chat completion, for the cache: only a text answer
    that finished with `stop` (tool-call deltas are not reassembled)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish: str | None = None
        self.cacheable = True
        self.first: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        self.first = self.first or chunk
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("tool_calls") or delta.get("function_call") or choice.get("index", 0) != 0:
                self.cacheable = False
            if isinstance(delta.get("content"), str):
                self.parts.append(delta["content"])
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]

    def completion(self, entry: PricedModel, usage: Usage) -> dict[str, Any] | None:
        if not self.cacheable or self.finish != "stop" or self.first is None:
            return None
        return {
            "id": self.first.get("id"),
            "object": "chat.completion",
            "created": self.first.get("created", int(time.time())),
            "model": entry.model.name,
            **({"system_fingerprint": "simulated"} if entry.model.is_simulated else {}),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(self.parts)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            },
        }


def relay(
    *,
    attempts: Attempts,
    entry: PricedModel,
    attempt: UsageAttempt,
    first: StreamChunk,
    upstream: Iterator[StreamChunk],
    started: float,
    fill: Callable[[PricedModel, dict[str, Any], Decimal], None] | None = None,
    prompt: str | None = None,
) -> Iterator[dict[str, Any]]:
    """`prompt`: the call's prompt when the organization keeps content; the settlement stores it
    with the streamed answer's text."""
    organization = attempts.organization
    usage: Usage | None = None
    completed = False
    transcript = _Transcript() if fill is not None or prompt is not None else None
    try:
        for item in _chain(first, upstream):
            if item.usage is not None:
                usage = item.usage
            if item.chunk is not None:
                if transcript is not None:
                    transcript.add(item.chunk)
                yield {**item.chunk, "model": entry.model.name}
        completed = True
    except ProviderError as error:
        attempt_settle(
            organization=organization,
            attempt=attempt,
            settlement=Settlement(
                status=AttemptStatus.FAILED,
                cost_usd=attempt.reserved_usd,
                error_class=f"stream_broken:{error.error_class}",
            ),
        )
        attempts.provider_failed(entry, error)
        return
    finally:
        if not completed or usage is None:
            # The client went away (GeneratorExit) or the provider never reported usage: what the
            # provider did is unknown, so the attempt is charged its reservation, never nothing.
            attempt_settle(
                organization=organization,
                attempt=attempt,
                settlement=Settlement(
                    status=AttemptStatus.FAILED if not completed else AttemptStatus.SUCCEEDED,
                    cost_usd=attempt.reserved_usd,
                    error_class="" if completed else "client_disconnected",
                ),
            )
    if usage is None:
        return
    latency_ms = int((time.perf_counter() - started) * 1000)
    settlement = success_settlement(entry, usage, latency_ms)
    if prompt is not None and transcript is not None:
        answer = "".join(transcript.parts)
        settlement = dataclasses.replace(settlement, content=content_draft(prompt=prompt, answer=answer))
    attempt_settle(organization=organization, attempt=attempt, settlement=settlement)
    attempts.succeeded(entry, latency_ms, settlement.cost_usd)
    body = transcript.completion(entry, usage) if transcript is not None else None
    if fill is not None and body is not None:
        fill(entry, body, settlement.cost_usd)
    yield {
        "id": f"chatcmpl-{attempt.request_id}",
        "object": "chat.completion.chunk",
        "model": entry.model.name,
        "choices": [],
        "usage": {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "cost_usd": str(settlement.cost_usd),
        },
    }


def _chain(first: StreamChunk, rest: Iterator[StreamChunk]) -> Iterator[StreamChunk]:
    yield first
    yield from rest
