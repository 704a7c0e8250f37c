"""The workflow template language: `{{ path }}` placeholders in strings, nothing else.

    Summarize: {{ input.text }}
    Translate: {{ steps.summary.output }}
    Title: {{ steps.meta.output.title }}     (fields of objects, indexes of lists: `output.items.0`)
    Either: {{ steps.a.output ?? steps.b.output ?? "none" }}   (first one that exists, is not skipped, not null)

No code runs: a placeholder is a dotted path (or a `??` chain of paths and JSON string literals).
Rendering is strict: a path that does not resolve is an error, never an empty string. Values
that are not strings are written as JSON. A template that is exactly one placeholder can also be
*resolved* to the value itself (a list for a map's `items`, an object for a transform).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PATH = re.compile(rf"{_NAME}(?:\.(?:{_NAME}|\d+))*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
MAX_TEMPLATE_CHARS = 100_000


class TemplateSyntaxError(ValueError):
    """The template can't be parsed; the message quotes the faulty placeholder."""


class TemplateError(Exception):
    """A placeholder did not resolve while rendering (missing field, skipped step, ...)."""


class OutputTooLarge(Exception):
    """Rendering (or writing a value as text) passed its bound; nothing past the bound was built."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than the limit of {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class Reference:
    """A dotted path: `("steps", "summary", "output", "title")`."""

    path: tuple[str, ...]

    @property
    def text(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class Literal:
    value: str


@dataclass(frozen=True)
class Placeholder:
    source: str  # as written, `{{ steps.a.output }}`
    alternatives: tuple[Reference | Literal, ...]

    @property
    def references(self) -> tuple[Reference, ...]:
        return tuple(a for a in self.alternatives if isinstance(a, Reference))


@dataclass(frozen=True)
class Template:
    source: str
    parts: tuple[str | Placeholder, ...] = field(default=())

    @property
    def placeholders(self) -> tuple[Placeholder, ...]:
        return tuple(part for part in self.parts if isinstance(part, Placeholder))

    @property
    def single(self) -> Placeholder | None:
        """The placeholder, if the template is exactly one (surrounding whitespace allowed)."""
        meaningful = [part for part in self.parts if not (isinstance(part, str) and not part.strip())]
        if len(meaningful) == 1 and isinstance(meaningful[0], Placeholder):
            return meaningful[0]
        return None

    def render(self, scope: Scope, *, limit: int | None = None) -> str:
        """The text, every placeholder replaced (strings as they are, other values as JSON).
        With `limit`: OutputTooLarge as soon as the text passes `limit` bytes (UTF-8), before the
        rest is written, since a short template repeating a large value can be gigabytes."""
        out: list[str] = []
        size = 0
        for part in self.parts:
            if isinstance(part, str):
                text = part
            elif limit is None:
                text = text_of(scope.evaluate(part))
            else:
                text = bounded_text(scope.evaluate(part), limit - size)
            size += utf8_size(text)
            if limit is not None and size > limit:
                raise OutputTooLarge(limit)
            out.append(text)
        return "".join(out)

    def resolve(self, scope: Scope) -> Any:
        """The value itself for a single-placeholder template; the rendered text otherwise."""
        single = self.single
        return scope.evaluate(single) if single is not None else self.render(scope)


def text_of(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


_ENCODER = json.JSONEncoder(ensure_ascii=False)


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def bounded_text(value: Any, limit: int) -> str:
    """`text_of(value)`, or OutputTooLarge as soon as it passes `limit` bytes: the JSON is written
    piece by piece and abandoned there (a value's JSON can be much larger than the value in
    memory, when it holds the same list many times)."""
    if isinstance(value, str):
        if utf8_size(value) > limit:
            raise OutputTooLarge(limit)
        return value
    chunks: list[str] = []
    size = 0
    for chunk in _ENCODER.iterencode(value):
        size += utf8_size(chunk)
        if size > limit:
            raise OutputTooLarge(limit)
        chunks.append(chunk)
    return "".join(chunks)


def text_size(value: Any, limit: int) -> int:
    """The size in bytes of `text_of(value)`, or OutputTooLarge once it passes `limit`, without
    keeping the text."""
    if isinstance(value, str):
        size = utf8_size(value)
    else:
        size = 0
        for chunk in _ENCODER.iterencode(value):
            size += utf8_size(chunk)
            if size > limit:
                break
    if size > limit:
        raise OutputTooLarge(limit)
    return size


def _placeholder(source: str, body: str) -> Placeholder:
    alternatives: list[Reference | Literal] = []
    for raw in body.split("??"):
        item = raw.strip()
        if _STRING.fullmatch(item):
            alternatives.append(Literal(json.loads(item)))
        elif _PATH.fullmatch(item):
            alternatives.append(Reference(tuple(item.split("."))))
        else:
            shown = item or "(empty)"
            raise TemplateSyntaxError(
                f"invalid placeholder {source}: {shown!r} is not a variable path like input.x or steps.name.output"
            )
    literals = [isinstance(alternative, Literal) for alternative in alternatives]
    if any(literals[:-1]) or literals == [True]:
        raise TemplateSyntaxError(f"invalid placeholder {source}: a string literal may only end a ?? chain")
    return Placeholder(source=source, alternatives=tuple(alternatives))


def template_parse(source: str) -> Template:
    """Parse a template; TemplateSyntaxError for an unclosed `{{` or a bad placeholder. A `}}` with
    no `{{` before it is text (JSON examples in prompts). `??` inside a string literal is not
    supported (literals are simple fallbacks)."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateSyntaxError(f"a template is limited to {MAX_TEMPLATE_CHARS} characters")
    # A plain scan, not a regex: a lazy `{{(.*?)}}` rescans the rest of the text from every `{{`
    # that has no `}}` after it, quadratic time (90 s for 100,000 characters, holding the GIL).
    parts: list[str | Placeholder] = []
    position = 0
    while (start := source.find("{{", position)) >= 0:
        end = source.find("}}", start + 2)
        if end < 0:
            raise TemplateSyntaxError(f"unclosed placeholder at {source[start:][:40]!r}")
        if start > position:
            parts.append(source[position:start])
        parts.append(_placeholder(source[start : end + 2], source[start + 2 : end]))
        position = end + 2
    if position < len(source):
        parts.append(source[position:])
    return Template(source=source, parts=tuple(parts))


_MISSING = object()


@dataclass(frozen=True)
class Scope:
    """What placeholders can see while a step runs: the run's input, finished steps' outputs, and
    inside a map the current `item` and its `index`."""

    input: Mapping[str, Any]
    outputs: Mapping[str, Any]  # step name -> output, for steps that succeeded
    skipped: frozenset[str] = frozenset()
    item: Any = _MISSING
    index: int | None = None

    def with_item(self, item: Any, index: int) -> Scope:
        return Scope(input=self.input, outputs=self.outputs, skipped=self.skipped, item=item, index=index)

    def evaluate(self, placeholder: Placeholder) -> Any:
        problem: TemplateError | None = None
        last = len(placeholder.alternatives) - 1
        for position, alternative in enumerate(placeholder.alternatives):
            if isinstance(alternative, Literal):
                return alternative.value
            try:
                value = self.lookup(alternative)
            except TemplateError as error:
                problem = problem or error
                if position == last:
                    if last:
                        raise TemplateError(f"{placeholder.source}: no alternative has a value ({problem})") from error
                    raise TemplateError(f"{placeholder.source}: {problem}") from error
                continue
            if value is not None or position == last:
                return value
        raise AssertionError("unreachable: the last alternative returns or raises")

    def lookup(self, reference: Reference) -> Any:
        root, *rest = reference.path
        if root == "input":
            return _walk(self.input, rest, "input")
        if root == "steps":
            if len(rest) < 2 or rest[1] != "output":
                raise TemplateError(f"refer to a step's result as steps.<name>.output, not {reference.text}")
            name = rest[0]
            if name in self.skipped:
                raise TemplateError(f"step {name!r} was skipped")
            if name not in self.outputs:
                raise TemplateError(f"step {name!r} has no output")
            return _walk(self.outputs[name], rest[2:], f"steps.{name}.output")
        if root == "item" and self.item is not _MISSING:
            return _walk(self.item, rest, "item")
        if root == "index" and self.index is not None and not rest:
            return self.index
        raise TemplateError(f"unknown variable {root!r}")


def _walk(value: Any, path: list[str], where: str) -> Any:
    for segment in path:
        if isinstance(value, Mapping):
            if segment not in value:
                raise TemplateError(f"{where} has no field {segment!r}")
            value = value[segment]
        elif isinstance(value, list) and segment.isdigit():
            if int(segment) >= len(value):
                raise TemplateError(f"{where} has {len(value)} items, no item {segment}")
            value = value[int(segment)]
        else:
            kind = "a list" if isinstance(value, list) else type(value).__name__ if value is not None else "null"
            raise TemplateError(f"{where} is {kind}, it has no field {segment!r}")
        where = f"{where}.{segment}"
    return value
