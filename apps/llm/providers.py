"""Provider adapters: every provider answers in OpenAI's chat-completion shape.

OpenAI and OpenAI-compatible servers go through the `openai` SDK, Anthropic through `anthropic`,
and the built-in simulator answers deterministically without any network (its answers say so).
The SDKs' own retries are off: the router retries, so that every attempt is reserved and recorded.

The SDKs are imported where they are used: importing them takes about 2.4 s (their pydantic types),
which every management command and `cognitionos` command paid through the admin's imports. The web
and worker processes import them as they start (`provider_sdks_import`), so no call waits for it.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings

from apps.llm.platform.models import CatalogModel, Provider
from cognitionos.thread_safe_cache import thread_safe_cache

if TYPE_CHECKING:
    import anthropic
    import openai


@dataclass
class Usage:
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class Reply:
    body: dict[str, Any]
    usage: Usage
    finish_reason: str


@dataclass
class StreamChunk:
    """One OpenAI-shaped `chat.completion.chunk`, or (last) the usage the provider reported."""

    chunk: dict[str, Any] | None = None
    usage: Usage | None = None
    finish_reason: str | None = None


class ProviderError(Exception):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = True,
        retry_after: float | None = None,
        error_class: str = "provider_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.error_class = error_class

    @property
    def provider_side(self) -> bool:
        """The deployment's fault (unreachable, timed out, 5xx, rate limited), which breakers and
        routing health count; a request the provider refused, or one our adapter could not send,
        says nothing about the deployment."""
        if self.status is None:
            return self.error_class in ("timeout", "connection_error")
        return self.status >= 500 or self.status in (408, 429)

    @property
    def request_fault(self) -> bool:
        """The provider refused the request itself (its parameters or content)."""
        return self.status in (400, 404, 413, 422)


class ProviderNotConfigured(ProviderError):
    def __init__(self, provider: str) -> None:
        super().__init__(f"no credentials configured for {provider}", retryable=False, error_class="not_configured")


@dataclass(frozen=True)
class CallContext:
    request_id: str
    attempt: int
    timeout_s: float
    extra_headers: dict[str, str] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        return {"x-cognitionos-request-id": self.request_id, "x-cognitionos-attempt": str(self.attempt)}


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# --- OpenAI and OpenAI-compatible ------------------------------------------------------------


@thread_safe_cache
def _openai_client(base_url: str, api_key: str) -> openai.OpenAI:
    import openai

    return openai.OpenAI(base_url=base_url or None, api_key=api_key, max_retries=0)


def _sdk_post(
    client: openai.OpenAI | anthropic.Anthropic, path: str, body: dict[str, Any], context: CallContext
) -> Any:
    """POST a request through the SDK's client (its authentication, timeouts, errors and connection
    pool), as the SDKs' documented way to reach any endpoint: without the per-call transformation
    of typed parameters that `create` does. Our bodies are already plain JSON built from an
    allowlist, and that transformation walked every message against the SDK's TypedDicts: about
    a millisecond of CPU per call, the largest single cost of a governed call in this process."""
    return client.post(
        path, cast_to=object, body=body, options={"timeout": context.timeout_s, "headers": context.headers()}
    )


def _sdk_error(exc: Exception, sdk: Any) -> ProviderError:
    """A provider SDK's exception (openai's and anthropic's share their shape) as a ProviderError."""
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderError(str(exc), error_class="timeout")
    if isinstance(exc, sdk.APIConnectionError):
        return ProviderError(str(exc), error_class="connection_error")
    if isinstance(exc, sdk.APIStatusError):
        status = exc.status_code
        return ProviderError(
            str(exc),
            status=status,
            retryable=status in (408, 409, 429) or status >= 500,  # 529: Anthropic's "overloaded"
            retry_after=_retry_after(exc.response.headers),
            error_class="rate_limited" if status == 429 else f"http_{status}",
        )
    return ProviderError(str(exc), error_class=type(exc).__name__)


class OpenAIProvider:
    def __init__(self, model: CatalogModel, own_key: str | None = None) -> None:
        if model.provider == Provider.OPENAI_COMPATIBLE:
            # An own key for a compatible server is given only for that server (own_key_name).
            base_url, api_key = model.base_url, own_key or settings.OPENAI_COMPATIBLE_API_KEY or "none"
        else:
            base_url, api_key = settings.OPENAI_BASE_URL, own_key or settings.OPENAI_API_KEY
            if not api_key:
                raise ProviderNotConfigured(model.provider)
        self.client = _openai_client(base_url, api_key)
        self.model = model

    def _request(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The engine's payload (allowlisted, with the output limit) for this deployment. OpenAI's own
        models take the limit as `max_completion_tokens` (its reasoning models refuse `max_tokens`);
        other OpenAI-compatible servers know `max_tokens`."""
        request = {**payload, "model": self.model.provider_model}
        if self.model.provider == Provider.OPENAI and "max_tokens" in request:
            request["max_completion_tokens"] = request.pop("max_tokens")
        return request

    def complete(self, payload: dict[str, Any], context: CallContext) -> Reply:
        import openai

        try:
            body: dict[str, Any] = _sdk_post(
                self.client, "/chat/completions", {**self._request(payload), "stream": False}, context
            )
        except openai.OpenAIError as exc:
            raise _sdk_error(exc, openai) from exc
        usage = body.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        choices = body.get("choices") or [{}]
        return Reply(
            body=body,
            usage=Usage(
                input_tokens=int(usage.get("prompt_tokens", 0)),
                cached_input_tokens=int(details.get("cached_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens", 0)),
            ),
            finish_reason=str(choices[0].get("finish_reason") or ""),
        )

    def embed(self, payload: dict[str, Any], context: CallContext) -> Reply:
        import openai

        try:
            body: dict[str, Any] = _sdk_post(
                self.client,
                "/embeddings",
                # Without it a provider may answer base64; our callers get what they asked for.
                {"encoding_format": "float", **payload, "model": self.model.provider_model},
                context,
            )
        except openai.OpenAIError as exc:
            raise _sdk_error(exc, openai) from exc
        tokens = int((body.get("usage") or {}).get("prompt_tokens", 0))
        return Reply(body=body, usage=Usage(input_tokens=tokens), finish_reason="stop")

    def stream(self, payload: dict[str, Any], context: CallContext) -> Iterator[StreamChunk]:
        import openai

        try:
            raw = self.client.chat.completions.with_raw_response.create(
                **self._request(payload),
                stream=True,
                stream_options={"include_usage": True},
                timeout=context.timeout_s,
                extra_headers=context.headers(),
            )
            stream = raw.parse()
            for event in stream:
                chunk = event.model_dump(exclude_none=True)
                usage = chunk.pop("usage", None)
                choices = chunk.get("choices") or []
                finish = choices[0].get("finish_reason") if choices else None
                if choices:
                    yield StreamChunk(chunk=chunk, finish_reason=finish)
                if usage:
                    details = usage.get("prompt_tokens_details") or {}
                    yield StreamChunk(
                        usage=Usage(
                            input_tokens=int(usage.get("prompt_tokens", 0)),
                            cached_input_tokens=int(details.get("cached_tokens") or 0),
                            output_tokens=int(usage.get("completion_tokens", 0)),
                        )
                    )
        except openai.OpenAIError as exc:
            raise _sdk_error(exc, openai) from exc


# --- Anthropic -------------------------------------------------------------------------------


@thread_safe_cache
def _anthropic_client(base_url: str, api_key: str) -> anthropic.Anthropic:
    import anthropic

    return anthropic.Anthropic(base_url=base_url or None, api_key=api_key, max_retries=0)


def _anthropic_content(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content or []:
        if part.get("type") == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            if url.startswith("data:"):
                media_type, _, data = url[5:].partition(";base64,")
                parts.append({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
            else:
                parts.append({"type": "image", "source": {"type": "url", "url": url}})
    return parts


_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


def _anthropic_turn(message: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI message as an Anthropic one: an assistant's tool calls become tool_use blocks, a
    `tool` message a user's tool_result block (the engine checked the shapes before)."""
    role = message["role"]
    if role == "tool":
        result = {
            "type": "tool_result",
            "tool_use_id": message.get("tool_call_id", ""),
            "content": message.get("content") or "",
        }
        return {"role": "user", "content": [result]}
    content = _anthropic_content(message.get("content"))
    calls = message.get("tool_calls") or []
    if role == "assistant" and calls:
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) and content else list(content or [])
        for call in calls:
            function = call.get("function") or {}
            try:
                arguments = json.loads(function.get("arguments") or "{}")
            except ValueError:
                arguments = {}
            blocks.append(
                {"type": "tool_use", "id": call.get("id", ""), "name": function.get("name", ""), "input": arguments}
            )
        return {"role": "assistant", "content": blocks}
    return {"role": role, "content": content}


def _anthropic_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") not in ("user", "assistant", "tool"):
            continue
        turn = _anthropic_turn(message)
        previous = turns[-1] if turns else None
        if previous is not None and previous["role"] == "user" == turn["role"] and message["role"] == "tool":
            # Results of one assistant turn's several calls go back in one user turn.
            previous["content"] = [*previous["content"], *turn["content"]]
            continue
        turns.append(turn)
    return turns


_ANTHROPIC_TOOL_CHOICE = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


def anthropic_request(payload: dict[str, Any], *, model: CatalogModel) -> dict[str, Any]:
    """An OpenAI chat request as Anthropic's Messages API wants it."""
    system = [m["content"] for m in payload["messages"] if m.get("role") in ("system", "developer")]
    messages = _anthropic_messages(payload["messages"])
    request: dict[str, Any] = {
        "model": model.provider_model,
        "messages": messages,
        "max_tokens": payload.get("max_tokens") or model.max_output_tokens,
    }
    if system:
        request["system"] = "\n\n".join(s if isinstance(s, str) else json.dumps(s) for s in system)
    for name in ("temperature", "top_p"):
        if name in payload:
            request[name] = payload[name]
    if "stop" in payload:
        stop = payload["stop"]
        request["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    if payload.get("tools"):
        request["tools"] = [
            {
                "name": tool["function"]["name"],
                "description": tool["function"].get("description", ""),
                "input_schema": tool["function"].get("parameters") or {"type": "object", "properties": {}},
            }
            for tool in payload["tools"]
            if tool.get("type") == "function"
        ]
        choice = payload.get("tool_choice")
        if isinstance(choice, dict):
            request["tool_choice"] = {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
        elif choice in _ANTHROPIC_TOOL_CHOICE:
            request["tool_choice"] = _ANTHROPIC_TOOL_CHOICE[choice]
    return request


def _openai_shape_from_anthropic(body: dict[str, Any], *, model_name: str) -> dict[str, Any]:
    text = "".join(block.get("text", "") for block in body.get("content", []) if block.get("type") == "text")
    tool_calls = [
        {
            "id": block["id"],
            "type": "function",
            "function": {"name": block["name"], "arguments": json.dumps(block.get("input") or {})},
        }
        for block in body.get("content", [])
        if block.get("type") == "tool_use"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    usage = body.get("usage") or {}
    cached = int(usage.get("cache_read_input_tokens") or 0)
    prompt = int(usage.get("input_tokens", 0)) + cached
    return {
        "id": f"chatcmpl-{body.get('id', uuid.uuid4().hex)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [
            {"index": 0, "message": message, "finish_reason": _STOP_REASONS.get(body.get("stop_reason") or "", "stop")}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": int(usage.get("output_tokens", 0)),
            "total_tokens": prompt + int(usage.get("output_tokens", 0)),
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


class AnthropicProvider:
    def __init__(self, model: CatalogModel, own_key: str | None = None) -> None:
        api_key = own_key or settings.ANTHROPIC_API_KEY
        if not api_key:
            raise ProviderNotConfigured(model.provider)
        self.client = _anthropic_client(settings.ANTHROPIC_BASE_URL, api_key)
        self.model = model

    def complete(self, payload: dict[str, Any], context: CallContext) -> Reply:
        import anthropic

        try:
            answer = _sdk_post(self.client, "/v1/messages", anthropic_request(payload, model=self.model), context)
        except anthropic.AnthropicError as exc:
            raise _sdk_error(exc, anthropic) from exc
        body = _openai_shape_from_anthropic(answer, model_name=self.model.name)
        usage = body["usage"]
        return Reply(
            body=body,
            usage=Usage(
                input_tokens=usage["prompt_tokens"],
                cached_input_tokens=usage["prompt_tokens_details"]["cached_tokens"],
                output_tokens=usage["completion_tokens"],
            ),
            finish_reason=body["choices"][0]["finish_reason"],
        )

    def stream(self, payload: dict[str, Any], context: CallContext) -> Iterator[StreamChunk]:
        import anthropic

        chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        usage = Usage()

        def chunk(delta: dict[str, Any], finish: str | None = None) -> StreamChunk:
            return StreamChunk(
                chunk={
                    "id": chunk_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": self.model.name,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                },
                finish_reason=finish,
            )

        try:
            events = self.client.messages.create(
                **anthropic_request(payload, model=self.model),
                stream=True,
                timeout=context.timeout_s,
                extra_headers=context.headers(),
            )
            yield chunk({"role": "assistant", "content": ""})
            for event in events:
                if event.type == "message_start":
                    start_usage = event.message.usage
                    usage.cached_input_tokens = int(start_usage.cache_read_input_tokens or 0)
                    usage.input_tokens = int(start_usage.input_tokens) + usage.cached_input_tokens
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    yield chunk({"content": event.delta.text})
                elif event.type == "message_delta":
                    usage.output_tokens = int(event.usage.output_tokens)
                    yield chunk({}, _STOP_REASONS.get(event.delta.stop_reason or "", "stop"))
        except anthropic.AnthropicError as exc:
            raise _sdk_error(exc, anthropic) from exc
        yield StreamChunk(usage=usage)


# --- Simulator -------------------------------------------------------------------------------


def _estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text.encode()) / 4))


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content or [] if p.get("type") == "text")
    return ""


class SimulatorProvider:
    """Deterministic answers and token counts, for running without any provider key.

    Latency and failure rate come from settings (LLM_SIMULATOR_LATENCY_MS, LLM_SIMULATOR_FAILURE_RATE).
    Every answer starts with "[simulated]" so nobody mistakes it for a model's.
    """

    def __init__(self, model: CatalogModel) -> None:
        self.model = model

    def _answer(self, payload: dict[str, Any], context: CallContext) -> tuple[str, Usage, str]:
        latency = settings.LLM_SIMULATOR_LATENCY_MS / 1000
        if latency:
            time.sleep(latency)
        if random.random() < settings.LLM_SIMULATOR_FAILURE_RATE:
            raise ProviderError("simulated provider failure", status=503, error_class="http_503")
        question = _last_user_text(payload["messages"])
        digest = hashlib.sha256(json.dumps(payload["messages"], sort_keys=True).encode()).hexdigest()[:8]
        text = f"[simulated] {self.model.name} answer {digest} to: {question[:200]}"
        prompt_tokens = sum(_estimate_tokens(json.dumps(m.get("content", ""))) + 3 for m in payload["messages"])
        output = _estimate_tokens(text)
        finish = "stop"
        limit = payload.get("max_tokens")
        if limit is not None and output > limit:
            text, output, finish = text.encode()[: 4 * limit].decode(errors="ignore"), limit, "length"
        return text, Usage(input_tokens=prompt_tokens, output_tokens=output), finish

    def complete(self, payload: dict[str, Any], context: CallContext) -> Reply:
        text, usage, finish = self._answer(payload, context)
        body = {
            "id": f"chatcmpl-sim-{context.request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model.name,
            "system_fingerprint": "simulated",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            },
        }
        return Reply(body=body, usage=usage, finish_reason=finish)

    def embed(self, payload: dict[str, Any], context: CallContext) -> Reply:
        inputs = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
        dimensions = int(payload.get("dimensions") or 1536)
        data = []
        for index, text in enumerate(inputs):
            seed = hashlib.sha256(str(text).encode()).digest()
            generator = random.Random(seed)
            vector = [generator.gauss(0, 1) for _ in range(dimensions)]
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            data.append({"object": "embedding", "index": index, "embedding": [v / norm for v in vector]})
        tokens = sum(_estimate_tokens(str(text)) for text in inputs)
        body = {
            "object": "list",
            "data": data,
            "model": self.model.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Reply(body=body, usage=Usage(input_tokens=tokens), finish_reason="stop")

    def stream(self, payload: dict[str, Any], context: CallContext) -> Iterator[StreamChunk]:
        text, usage, finish = self._answer(payload, context)
        base = {
            "id": f"chatcmpl-sim-{context.request_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model.name,
        }
        pieces = [text[i : i + 24] for i in range(0, len(text), 24)] or [""]
        yield StreamChunk(
            chunk={
                **base,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
            }
        )
        for piece in pieces:
            yield StreamChunk(
                chunk={**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            )
        yield StreamChunk(
            chunk={**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}, finish_reason=finish
        )
        yield StreamChunk(usage=usage)


ChatProvider = OpenAIProvider | AnthropicProvider | SimulatorProvider


def provider_for(model: CatalogModel, own_key: str | None = None) -> ChatProvider:
    """The adapter for a model, with the organization's own key when it has one."""
    if model.provider in (Provider.OPENAI, Provider.OPENAI_COMPATIBLE):
        return OpenAIProvider(model, own_key)
    if model.provider == Provider.ANTHROPIC:
        return AnthropicProvider(model, own_key)
    return SimulatorProvider(model)


def own_key_name(model: CatalogModel) -> str:
    """Which of the organization's own keys serves this model: the provider's, or for an
    OpenAI-compatible model the key stored for that model's server (its base URL), so an own
    compatible key is only ever sent to the server it was stored for."""
    if model.provider == Provider.OPENAI_COMPATIBLE:
        return compatible_key_name(model.base_url)
    return model.provider


def compatible_key_name(base_url: str) -> str:
    return f"{Provider.OPENAI_COMPATIBLE} {base_url.rstrip('/')}"


def provider_configured(model: CatalogModel, own_providers: frozenset[str] = frozenset()) -> bool:
    if own_key_name(model) in own_providers:
        return True
    if model.provider == Provider.OPENAI:
        return bool(settings.OPENAI_API_KEY)
    if model.provider == Provider.ANTHROPIC:
        return bool(settings.ANTHROPIC_API_KEY)
    if model.provider == Provider.OPENAI_COMPATIBLE:
        return bool(model.base_url)
    return True


def provider_sdks_import() -> None:
    """Import the provider SDKs now (the web and worker processes, as they start)."""
    import anthropic  # noqa: F401
    import openai  # noqa: F401
