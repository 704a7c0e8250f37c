"""What a caller may ask of a provider: every request is rebuilt from an allowlist, every number bounded.

The payload sent to a provider is built field by field from the tables below, never passed
through: a field we don't know could change the model, the number of answers or the token limits
after the request was priced (the openai SDK sends `extra_body` on to the provider, overriding
anything). Unknown fields, and known ones whose cost we can't bound, are refused with a 400 that
names them. The bounds are the providers' own where they publish them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from apps.llm.refusals import LlmRefusal, invalid, unsupported
from apps.llm.router import POLICIES

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
MAX_TOKENS_CEILING = 1_000_000
MAX_MESSAGES = 2_048
MAX_TOOLS = 128
MAX_IMAGES = 50
MAX_STOP_SEQUENCES = 4
MAX_LOGIT_BIAS = 300
MAX_SHORT_TEXT = 256  # `user`, tool names, stop sequences
MAX_EMBEDDING_INPUTS = 2_048
# Providers add a system prompt of their own when tools are offered (Anthropic: 346 tokens and more
# per tool_choice); the JSON of the tools is counted besides.
TOOLS_OVERHEAD_TOKENS = 1_024
_MESSAGE_FIELDS = {
    "system": frozenset({"role", "content", "name"}),
    "developer": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset({"role", "content", "name", "tool_calls", "function_call", "refusal"}),
    "tool": frozenset({"role", "content", "tool_call_id"}),
}
_PART_TYPES = frozenset({"text", "image_url", "refusal"})
_IMAGE_DETAIL = frozenset({"auto", "low", "high"})
# Known fields whose cost we can't bound or that would keep content outside the organization's policy.
_REFUSED = {
    "service_tier": "a service tier other than the default changes the price",
    "audio": "audio output is priced per audio token, which CognitionOS does not meter",
    "modalities": "only text output is supported",
    "web_search_options": "web search is priced per call, which CognitionOS does not meter",
    "prediction": "predicted outputs bill rejected tokens beyond the answer",
    "store": "the provider would keep the conversation outside your organization's content policy",
    "metadata": "metadata is only used with `store`",
    "extra_body": "CognitionOS forwards only the parameters it can price",
    "extra_headers": "CognitionOS forwards only the parameters it can price",
    "extra_query": "CognitionOS forwards only the parameters it can price",
}
# Our own request fields, read here and never forwarded.
EXTENSIONS = frozenset({"policy", "min_quality", "max_cost_usd", "cache"})
_READ_NOT_FORWARDED = frozenset({"model", "n", "max_tokens", "max_completion_tokens", "stream", "stream_options"})
_CACHE_FIELDS = frozenset({"skip", "ttl", "semantic"})


def _number(low: float, high: float) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            raise invalid(f"`{name}` must be a number from {low:g} to {high:g}", name)

    return check


def _integer(low: int, high: int) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise invalid(f"`{name}` must be an integer from {low} to {high}", name)

    return check


def _boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise invalid(f"`{name}` must be true or false", name)


def _short_text(name: str, value: Any) -> None:
    if not isinstance(value, str) or len(value) > MAX_SHORT_TEXT:
        raise invalid(f"`{name}` must be a string of at most {MAX_SHORT_TEXT} characters", name)


def _one_of(*choices: str) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if value not in choices:
            raise invalid(f"`{name}` must be one of {list(choices)}", name)

    return check


def _stop(name: str, value: Any) -> None:
    sequences = [value] if isinstance(value, str) else value
    if (
        not isinstance(sequences, list)
        or len(sequences) > MAX_STOP_SEQUENCES
        or not all(isinstance(s, str) and 0 < len(s) <= MAX_SHORT_TEXT for s in sequences)
    ):
        raise invalid(f"`{name}` must be a string or up to {MAX_STOP_SEQUENCES} strings", name)


def _logit_bias(name: str, value: Any) -> None:
    if (
        not isinstance(value, dict)
        or len(value) > MAX_LOGIT_BIAS
        or not all(
            isinstance(k, str) and k.isdigit() and isinstance(v, int | float) and -100 <= v <= 100
            for k, v in value.items()
        )
    ):
        raise invalid(f"`{name}` maps up to {MAX_LOGIT_BIAS} token ids to numbers from -100 to 100", name)


def _response_format(name: str, value: Any) -> None:
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object", "json_schema"):
        raise invalid(f"`{name}` must be an object whose `type` is text, json_object or json_schema", name)
    if value["type"] == "json_schema" and not isinstance(value.get("json_schema"), dict):
        raise invalid(f"`{name}.json_schema` must be an object", f"{name}.json_schema")
    extra = set(value) - {"type", "json_schema"}
    if extra:
        raise unsupported(f"{name}.{sorted(extra)[0]}")


def _function(name: str, value: Any) -> None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise invalid(f"`{name}` must be an object with a `name`", name)
    _short_text(f"{name}.name", value["name"])
    extra = set(value) - {"name", "description", "parameters", "strict"}
    if extra:
        raise unsupported(f"{name}.{sorted(extra)[0]}")


def _tools(name: str, value: Any) -> None:
    if not isinstance(value, list) or len(value) > MAX_TOOLS:
        raise invalid(f"`{name}` must be an array of at most {MAX_TOOLS} tools", name)
    for index, tool in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise unsupported(f"{where}.type", "only function tools are supported")
        if set(tool) - {"type", "function"}:
            raise unsupported(f"{where}.{sorted(set(tool) - {'type', 'function'})[0]}")
        _function(f"{where}.function", tool.get("function"))


def _functions(name: str, value: Any) -> None:
    if not isinstance(value, list) or len(value) > MAX_TOOLS:
        raise invalid(f"`{name}` must be an array of at most {MAX_TOOLS} functions", name)
    for index, function in enumerate(value):
        _function(f"{name}[{index}]", function)


def _tool_choice(name: str, value: Any) -> None:
    if value in ("none", "auto", "required"):
        return
    if (
        isinstance(value, dict)
        and value.get("type") == "function"
        and isinstance(value.get("function"), dict)
        and set(value) == {"type", "function"}
    ):
        _short_text(f"{name}.function.name", value["function"].get("name"))
        return
    raise invalid(f'`{name}` must be "none", "auto", "required" or {{"type": "function", "function": {{...}}}}', name)


def _function_call(name: str, value: Any) -> None:
    if value in ("none", "auto"):
        return
    if isinstance(value, dict) and set(value) == {"name"}:
        _short_text(f"{name}.name", value["name"])
        return
    raise invalid(f'`{name}` must be "none", "auto" or {{"name": ...}}', name)


# Forwarded as given once checked; each either priced (its JSON counts as prompt) or price-neutral.
_FORWARDED: dict[str, Callable[[str, Any], None]] = {
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "frequency_penalty": _number(-2, 2),
    "presence_penalty": _number(-2, 2),
    "seed": _integer(-(2**63), 2**63 - 1),
    "stop": _stop,
    "logit_bias": _logit_bias,
    "logprobs": _boolean,
    "top_logprobs": _integer(0, 20),
    "user": _short_text,
    "response_format": _response_format,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "parallel_tool_calls": _boolean,
    "functions": _functions,
    "function_call": _function_call,
    "reasoning_effort": _one_of("minimal", "low", "medium", "high"),
}


@dataclass(frozen=True)
class ChatCall:
    model: str | None
    policy: str | None
    min_quality: int
    payload: dict[str, Any]  # what goes to the provider (OpenAI shape), built from the allowlist
    stream: bool
    max_tokens: int | None
    max_cost_usd: Decimal | None
    cache_skip: bool
    cache_ttl: int | None
    cache_semantic: bool = False  # the request opts in to L3 (the organization must allow it too)
    prompt_bytes: int = 0  # UTF-8 bytes of everything counted as prompt, images excepted
    images: int = 0  # image parts: each is reserved at the model's `max_tokens_per_image`

    @property
    def prompt_token_bound(self) -> int:
        """Prompt tokens at most, images excepted: no token is shorter than one UTF-8 byte."""
        tools = "tools" in self.payload or "functions" in self.payload
        return self.prompt_bytes + (TOOLS_OVERHEAD_TOKENS if tools else 0)


def _content(index: int, role: str, content: Any) -> int:
    """Check a message's content; the number of images in it."""
    where = f"messages[{index}].content"
    if content is None or isinstance(content, str):
        return 0
    if not isinstance(content, list):
        raise invalid(f"{where} must be a string or an array of parts", where)
    images = 0
    for number, part in enumerate(content):
        at = f"{where}[{number}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _PART_TYPES:
            raise unsupported(f"{at}.type", f"content parts of type {kind!r} can't be priced; send text or images")
        assert isinstance(part, dict)
        if kind == "text" and (set(part) != {"type", "text"} or not isinstance(part["text"], str)):
            raise invalid(f"{at} must be {{type: text, text: <string>}}", at)
        if kind == "refusal" and (role != "assistant" or not isinstance(part.get("refusal"), str)):
            raise invalid(f"{at}: refusal parts belong to assistant messages", at)
        if kind == "image_url":
            image = part.get("image_url")
            if (
                role != "user"
                or set(part) != {"type", "image_url"}
                or not isinstance(image, dict)
                or not isinstance(image.get("url"), str)
                or set(image) - {"url", "detail"}
                or image.get("detail", "auto") not in _IMAGE_DETAIL
            ):
                raise invalid(f"{at} must be a user's {{type: image_url, image_url: {{url, detail}}}}", at)
            images += 1
    return images


def _messages(messages: Any) -> int:
    """Check the messages; the number of images in them."""
    if not isinstance(messages, list) or not messages:
        raise invalid("`messages` must be a non-empty array", "messages")
    if len(messages) > MAX_MESSAGES:
        raise invalid(f"`messages` holds at most {MAX_MESSAGES} messages", "messages")
    images = 0
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            raise invalid(f"messages[{index}] needs a role among {sorted(ROLES)}", f"messages[{index}].role")
        assert isinstance(message, dict) and isinstance(role, str)
        extra = set(message) - _MESSAGE_FIELDS[role]
        if extra:
            raise unsupported(f"messages[{index}].{sorted(extra)[0]}")
        images += _content(index, role, message.get("content"))
    if images > MAX_IMAGES:
        raise invalid(f"a request holds at most {MAX_IMAGES} images", "messages")
    return images


def _prompt_bytes(payload: dict[str, Any], images: int) -> int:
    """UTF-8 bytes of the prompt as sent (messages, tools, schemas, every forwarded field); image
    URLs are left out, since images are counted at their own worst case."""
    counted = payload
    if images:
        counted = {
            **payload,
            "messages": [
                {
                    **message,
                    "content": [
                        part for part in message["content"] if not isinstance(part, dict) or part["type"] != "image_url"
                    ],
                }
                if isinstance(message.get("content"), list)
                else message
                for message in payload["messages"]
            ],
        }
    return len(json.dumps(counted, ensure_ascii=False, separators=(",", ":")).encode())


# `"model": "default"` (or no model and no policy): the organization's default policy decides.
DEFAULT_MODEL = "default"


def _model_and_policy(body: dict[str, Any]) -> tuple[Any, Any]:
    model, policy = body.get("model"), body.get("policy")
    if isinstance(model, str) and model in POLICIES and policy is None:
        return None, model  # `"model": "cheapest"` picks a policy, for clients that only set model
    if model == DEFAULT_MODEL:
        return None, policy  # the organization's default policy, resolved by the engine (apps.llm.engine)
    return model, policy


def chat_call_parse(body: Any) -> ChatCall:  # noqa: PLR0912 - one check per field, in reading order
    """Validate an OpenAI chat-completions body and build the provider payload from the allowlist;
    refuse what we can't honour or price with a 400 naming the field."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    for name in body:
        if name not in _FORWARDED and name not in EXTENSIONS and name not in _READ_NOT_FORWARDED and name != "messages":
            raise unsupported(name, _REFUSED.get(name, ""))
    images = _messages(body.get("messages"))
    model, policy = _model_and_policy(body)
    if model is not None and (not isinstance(model, str) or len(model) > 100):
        raise invalid("`model` must be a model's name", "model")
    if model is None and policy is not None and policy not in POLICIES:
        raise invalid(f"give a `model`, or a `policy` among {list(POLICIES)}", "model", code="model_required")
    if body.get("n", 1) != 1:
        raise unsupported("n", "more than one answer per request; send separate requests")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= MAX_TOKENS_CEILING
    ):
        raise invalid(f"`max_tokens` must be an integer from 1 to {MAX_TOKENS_CEILING}", "max_tokens")
    min_quality = body.get("min_quality", 1)
    if not isinstance(min_quality, int) or isinstance(min_quality, bool) or not 1 <= min_quality <= 5:
        raise invalid("`min_quality` must be an integer from 1 to 5", "min_quality")
    max_cost = body.get("max_cost_usd")
    try:
        max_cost_usd = Decimal(str(max_cost)) if max_cost is not None else None
    except ArithmeticError as exc:
        raise invalid("`max_cost_usd` must be a number", "max_cost_usd") from exc
    if max_cost_usd is not None and (not max_cost_usd.is_finite() or max_cost_usd < 0):
        raise invalid("`max_cost_usd` must be a non-negative number", "max_cost_usd")
    cache = body.get("cache") or {}
    if not isinstance(cache, dict):
        raise invalid('`cache` must be an object like {"skip": true} or {"ttl": 600}', "cache")
    if set(cache) - _CACHE_FIELDS:
        raise unsupported(f"cache.{sorted(set(cache) - _CACHE_FIELDS)[0]}")
    ttl = cache.get("ttl")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= 30 * 86400):
        raise invalid("`cache.ttl` must be seconds from 1 to 2592000", "cache.ttl")
    for flag in ("skip", "semantic"):
        if not isinstance(cache.get(flag, False), bool):
            raise invalid(f"`cache.{flag}` must be true or false", f"cache.{flag}")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("`stream` must be true or false", "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise unsupported("stream_options", "only `include_usage` is accepted (usage is always reported)")
    payload: dict[str, Any] = {"messages": body["messages"]}
    for name, check in _FORWARDED.items():
        if name in body:
            check(name, body[name])
            payload[name] = body[name]
    if max_tokens is not None:
        payload["max_tokens"] = max_tokens
    return ChatCall(
        model=model,
        policy=policy if model is None else None,
        min_quality=min_quality,
        payload=payload,
        stream=stream,
        max_tokens=max_tokens,
        max_cost_usd=max_cost_usd,
        cache_skip=cache.get("skip", False),
        cache_ttl=ttl,
        cache_semantic=cache.get("semantic", False),
        prompt_bytes=_prompt_bytes(payload, images),
        images=images,
    )


@dataclass(frozen=True)
class EmbeddingsCall:
    model: str
    inputs: list[str]
    dimensions: int | None
    encoding_format: str
    user: str | None

    @property
    def input_bytes(self) -> int:
        return sum(len(item.encode()) for item in self.inputs)

    def payload(self) -> dict[str, Any]:
        """What the provider gets (the model is added by the adapter)."""
        payload: dict[str, Any] = {"input": self.inputs, "encoding_format": self.encoding_format}
        if self.dimensions is not None:
            payload["dimensions"] = self.dimensions
        if self.user is not None:
            payload["user"] = self.user
        return payload


_EMBEDDINGS_FIELDS = frozenset({"model", "input", "dimensions", "encoding_format", "user"})


def embeddings_call_parse(body: Any, *, max_dimensions: Callable[[str], int | None]) -> EmbeddingsCall:
    """Validate an OpenAI embeddings body. `max_dimensions(model)` is the catalog's vector size of the
    model (None: no such embedding model, answered 404)."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    for name in body:
        if name not in _EMBEDDINGS_FIELDS:
            raise unsupported(name, _REFUSED.get(name, ""))
    text = body.get("input")
    inputs = text if isinstance(text, list) else [text]
    if not inputs or len(inputs) > MAX_EMBEDDING_INPUTS or not all(isinstance(item, str) and item for item in inputs):
        raise invalid(
            f"`input` must be a non-empty string or an array of up to {MAX_EMBEDDING_INPUTS} non-empty strings",
            "input",
        )
    name = body.get("model")
    limit = max_dimensions(name) if isinstance(name, str) else None
    if limit is None or not isinstance(name, str):
        raise LlmRefusal(
            404, "model_not_found", f"the embedding model {name!r} does not exist or is not available", param="model"
        )
    dimensions = body.get("dimensions")
    if dimensions is not None:
        _integer(1, limit)("dimensions", dimensions)
    encoding = body.get("encoding_format", "float")
    _one_of("float", "base64")("encoding_format", encoding)
    user = body.get("user")
    if user is not None:
        _short_text("user", user)
    return EmbeddingsCall(model=name, inputs=inputs, dimensions=dimensions, encoding_format=encoding, user=user)
