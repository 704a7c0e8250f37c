"""The playground's prompt: read from the page's form, checked by the gateway's own validation
(`chat_call_parse`, so the portal accepts exactly what /v1 accepts), and written out as code for the
openai and anthropic Python SDKs and curl.

The code is generated here, from the validated values, never from the page's text: every string
goes through `json.dumps` (a valid Python and JSON literal whatever it holds: quotes, backslashes,
newlines, `</script>`), and the curl body through `shlex.quote`. The key is always a placeholder
read from the environment, never a real key.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.http import QueryDict

from apps.llm.calls import (
    CHAT_POLICIES,
    BudgetStatus,
    ChatCall,
    ChatCostPreview,
    LlmRefusal,
    chat_call_parse,
    chat_cost_preview,
)

ROLES = ("user", "assistant")
MAX_TURNS = 50  # the gateway takes 2,048 messages; a page with more is not a playground any more
DEFAULT_MAX_TOKENS = 512
# The preview's guess at an answer's length (the worst case is the whole max tokens, as reserved).
EXPECTED_OUTPUT_TOKENS = 256
BYTES_PER_TOKEN = 4
KEY_VARIABLE = "COGNITIONOS_API_KEY"
# The form's fields, as the page names them (the messages are turn-<n>, from 1).
FIELDS = ("model", "system", "turns", "temperature", "top_p", "max_tokens", "seed")
_MESSAGE_PARAM = re.compile(r"messages\[(\d+)\]")


class PromptInvalid(Exception):
    """A field of the form is wrong: `field` names it as the page does, `message` says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


@dataclass(frozen=True)
class Turn:
    role: str
    content: str


@dataclass(frozen=True)
class PlaygroundPrompt:
    target: str  # a model's name, or a routing policy (/v1 takes either as `model`)
    system: str
    turns: tuple[Turn, ...]
    max_tokens: int
    temperature: float | None
    top_p: float | None
    seed: int | None

    @property
    def is_policy(self) -> bool:
        return self.target in CHAT_POLICIES

    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + [{"role": turn.role, "content": turn.content} for turn in self.turns]

    def sampling(self) -> dict[str, float | int]:
        """The sampling parameters given, in the order the page shows them."""
        given = {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}
        return {name: value for name, value in given.items() if value is not None}

    def body(self) -> dict[str, Any]:
        """The chat-completions body, as /v1 takes it."""
        return {
            "model": self.target,
            "messages": self.messages(),
            "max_tokens": self.max_tokens,
            **self.sampling(),
            "stream": True,
        }

    def call(self) -> ChatCall:
        """The call, validated by the gateway's own rules: a refusal names the page's field."""
        try:
            return chat_call_parse(self.body())
        except LlmRefusal as refusal:
            raise PromptInvalid(self.field_of(refusal.param), refusal.message) from refusal

    def field_of(self, param: str | None) -> str:
        """The page's field for a request field named by the engine (`messages[2].content` is a
        turn, or the system prompt)."""
        if param is None:
            return "form"
        found = _MESSAGE_PARAM.match(param)
        if found:
            index = int(found.group(1)) - (1 if self.system else 0)
            return "system" if index < 0 else f"turn-{index + 1}"
        name = param.split(".")[0].split("[")[0]
        if name == "max_completion_tokens":
            return "max_tokens"
        return name if name in FIELDS else "form"


def _text(data: QueryDict, name: str) -> str:
    value = data.get(name, "")
    return _lines(value) if isinstance(value, str) else ""


def _lines(text: str) -> str:
    """Browsers send a textarea's line breaks as CRLF: the model (and the code) gets plain newlines."""
    return text.replace("\r\n", "\n")


def _number(data: QueryDict, name: str, label: str) -> float | None:
    raw = _text(data, name).strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise PromptInvalid(name, f"{label} must be a number.") from None
    # A whole number stays an int in the request and in the code (`temperature=1`, not 1.0).
    return int(value) if value.is_integer() and "." not in raw and "e" not in raw.lower() else value


def _integer(data: QueryDict, name: str, label: str) -> int | None:
    raw = _text(data, name).strip()
    if not raw:
        return None
    if len(raw) > 25:  # a 64-bit integer has 20 digits at most; int() of a long string is slow
        raise PromptInvalid(name, f"{label} must be a whole number.")
    try:
        return int(raw)
    except ValueError:
        raise PromptInvalid(name, f"{label} must be a whole number.") from None


def prompt_parse(data: QueryDict) -> tuple[PlaygroundPrompt, ChatCall]:
    """The page's form as a prompt and its validated call. Raises PromptInvalid naming the field."""
    target = _text(data, "model").strip()
    if not target:
        raise PromptInvalid("model", "Choose a model or a routing policy.")
    roles, contents = data.getlist("role"), [_lines(content) for content in data.getlist("content")]
    if not contents:
        raise PromptInvalid("turns", "Add a message to send.")
    if len(contents) > MAX_TURNS or len(roles) != len(contents):
        raise PromptInvalid("turns", f"A prompt holds at most {MAX_TURNS} messages, each with a role.")
    turns = []
    for number, (role, content) in enumerate(zip(roles, contents, strict=True), start=1):
        if role not in ROLES:
            raise PromptInvalid(f"turn-{number}", f"Message {number}: the role is user or assistant.")
        if not content.strip():
            raise PromptInvalid(f"turn-{number}", f"Message {number} is empty: write it, or remove it.")
        turns.append(Turn(role=role, content=content))
    system = _text(data, "system")
    size = len(system.encode()) + sum(len(turn.content.encode()) for turn in turns)
    if size > settings.LLM_MAX_REQUEST_BYTES:
        raise PromptInvalid("turns", f"The prompt is over {settings.LLM_MAX_REQUEST_BYTES} bytes.")
    max_tokens = _integer(data, "max_tokens", "Max tokens")
    seed = _integer(data, "seed", "Seed")
    prompt = PlaygroundPrompt(
        target=target,
        system=system if system.strip() else "",
        turns=tuple(turns),
        max_tokens=DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
        temperature=_number(data, "temperature", "Temperature"),
        top_p=_number(data, "top_p", "Top P"),
        seed=seed,
    )
    return prompt, prompt.call()


def prompt_cost_preview(call: ChatCall) -> ChatCostPreview:
    """The call priced before it runs: on the model the router would pick now, with an answer of
    EXPECTED_OUTPUT_TOKENS; and the worst case over its fallbacks, every prompt byte a token and the
    whole max tokens written, which is what the budget reserves."""
    return chat_cost_preview(
        model=call.model,
        policy=call.policy,
        min_quality=call.min_quality,
        max_tokens=call.max_tokens,
        expected_input_tokens=math.ceil(call.prompt_bytes / BYTES_PER_TOKEN),
        worst_input_tokens=call.prompt_token_bound,
        expected_output_tokens=EXPECTED_OUTPUT_TOKENS,
        routing_prompt_tokens=call.prompt_token_bound // BYTES_PER_TOKEN,
    )


@dataclass(frozen=True)
class Headroom:
    """The tightest hard budget a member's call is reserved against, and what it has left."""

    label: str  # "the organization's daily budget", "your monthly budget"
    remaining_usd: Decimal


def budget_headroom(statuses: list[BudgetStatus], *, user_id: int) -> Headroom | None:
    """Of the hard budgets a call by this member counts against (the organization's, and the
    member's own), the one with the least left; None when there is none."""
    applying = [
        status
        for status in statuses
        if status.budget.hard
        and (
            status.budget.scope == "organization"
            or (status.budget.scope == "user" and status.budget.scope_id == str(user_id))
        )
    ]
    if not applying:
        return None
    tightest = min(applying, key=lambda status: status.remaining_usd)
    period = {"day": "daily", "month": "monthly"}.get(tightest.budget.period, tightest.budget.period)
    whose = "the organization's" if tightest.budget.scope == "organization" else "your"
    return Headroom(label=f"{whose} {period} budget", remaining_usd=tightest.remaining_usd)


# --- View as code ------------------------------------------------------------------------------


def _literal(value: str) -> str:
    """A string as a Python (and JSON) literal. JSON's escapes are all valid in Python; the line
    and paragraph separators are escaped too, since some editors break lines at them."""
    return json.dumps(value, ensure_ascii=False).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _messages_literal(messages: list[dict[str, str]], indent: str) -> str:
    lines = [f'{indent}    {{"role": {_literal(m["role"])}, "content": {_literal(m["content"])}}},' for m in messages]
    return "[\n" + "\n".join(lines) + f"\n{indent}]"


def openai_python(prompt: PlaygroundPrompt, *, api_base_url: str) -> str:
    arguments = [
        f"model={_literal(prompt.target)},",
        f"messages={_messages_literal(prompt.messages(), '    ')},",
        f"max_tokens={prompt.max_tokens},",
        *(f"{name}={value!r}," for name, value in prompt.sampling().items()),
        "stream=True,",
    ]
    return "\n".join(
        [
            "import os",
            "",
            "from openai import OpenAI",
            "",
            "client = OpenAI(",
            f"    base_url={_literal(api_base_url)},",
            f'    api_key=os.environ["{KEY_VARIABLE}"],  # your CognitionOS API key',
            ")",
            "stream = client.chat.completions.create(",
            *(f"    {argument}" for argument in arguments),
            ")",
            "for chunk in stream:",
            "    if chunk.choices and chunk.choices[0].delta.content:",
            '        print(chunk.choices[0].delta.content, end="", flush=True)',
            "print()",
            "",
        ]
    )


def anthropic_python(prompt: PlaygroundPrompt, *, platform_url: str) -> str:
    """The Messages API takes the system prompt apart and has no seed (the call goes without it)."""
    turns = [{"role": turn.role, "content": turn.content} for turn in prompt.turns]
    sampling = [f'"{name}": {value!r}' for name, value in prompt.sampling().items() if name != "seed"]
    arguments = [
        f"model={_literal(prompt.target)},",
        f"max_tokens={prompt.max_tokens},",
        *([f"system={_literal(prompt.system)},"] if prompt.system else []),
        f"messages={_messages_literal(turns, '    ')},",
        # Recent anthropic SDKs take no sampling arguments; the Messages API still reads them from
        # the body, where `extra_body` puts them (in every SDK version).
        *([f"extra_body={{{', '.join(sampling)}}},"] if sampling else []),
    ]
    seed_note = ["# The Messages API has no seed: this call is sent without it."] if prompt.seed is not None else []
    return "\n".join(
        [
            "import os",
            "",
            "import anthropic",
            "",
            "client = anthropic.Anthropic(",
            f"    base_url={_literal(platform_url)},",
            f'    api_key=os.environ["{KEY_VARIABLE}"],  # your CognitionOS API key',
            ")",
            *seed_note,
            "with client.messages.stream(",
            *(f"    {argument}" for argument in arguments),
            ") as stream:",
            "    for text in stream.text_stream:",
            '        print(text, end="", flush=True)',
            "print()",
            "",
        ]
    )


def curl(prompt: PlaygroundPrompt, *, api_base_url: str) -> str:
    body = json.dumps(prompt.body(), ensure_ascii=False, indent=2)
    return (
        f"curl -N {shlex.quote(api_base_url + '/chat/completions')} \\\n"
        '  -H "Content-Type: application/json" \\\n'
        f'  -H "Authorization: Bearer ${KEY_VARIABLE}" \\\n'
        f"  -d {shlex.quote(body)}\n"
    )


@dataclass(frozen=True)
class Snippet:
    slug: str
    title: str
    language: str
    code: str


def prompt_snippets(prompt: PlaygroundPrompt, *, platform_url: str) -> list[Snippet]:
    """The same call for the openai SDK, the anthropic SDK and curl, against `platform_url` (the
    platform host, where /v1 is served)."""
    api_base_url = f"{platform_url}/v1"
    return [
        Snippet("openai", "OpenAI Python SDK", "python", openai_python(prompt, api_base_url=api_base_url)),
        Snippet("anthropic", "Anthropic Python SDK", "python", anthropic_python(prompt, platform_url=platform_url)),
        Snippet("curl", "curl", "shell", curl(prompt, api_base_url=api_base_url)),
    ]
