"""Form fields for pages whose input is validated by a REST API serializer (jobs, agents).

The serializer stays the one validation of the input (the same bounds and messages as the API);
these describe how each field is shown — label, input type, the serializer's bounds as HTML
attributes — and carry its value and its errors back to `portal/_api_fields.html`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

NON_FIELD = "non_field_errors"


@dataclass(frozen=True)
class FieldSpec:
    name: str
    label: str
    kind: str = "text"  # text, number, textarea, select
    help: str = ""
    # (value, label) pairs of a select
    options: tuple[tuple[str, str], ...] = ()
    # HTML attributes (min, max, step, maxlength, rows, placeholder...): constants of ours, not input
    attrs: Mapping[str, str] = field(default_factory=dict)
    # values a text input suggests (a <datalist>), any other value still accepted
    suggestions: tuple[str, ...] = ()


@dataclass(frozen=True)
class BoundField:
    spec: FieldSpec
    value: str
    errors: list[str]

    @property
    def id(self) -> str:
        return f"id_{self.spec.name}"

    @property
    def attrs(self) -> list[tuple[str, str]]:
        return list(self.spec.attrs.items())


def error_messages(errors: Any) -> dict[str, list[str]]:
    """A serializer's (or a refusal's) errors as {field: [message, ...]}, nested lists flattened."""
    found: dict[str, list[str]] = {}

    def texts(value: Any) -> list[str]:
        if isinstance(value, Mapping):
            return [text for item in value.values() for text in texts(item)]
        if isinstance(value, list | tuple):
            return [text for item in value for text in texts(item)]
        return [str(value)]

    if isinstance(errors, Mapping):
        for name, value in errors.items():
            found.setdefault(str(name), []).extend(texts(value))
    else:
        found[NON_FIELD] = texts(errors)
    return found


def bind(
    specs: Iterable[FieldSpec], values: Mapping[str, Any], errors: Mapping[str, list[str]] | None = None
) -> list[BoundField]:
    """The fields with their values (None shown as empty) and their errors."""
    errors = errors or {}
    return [
        BoundField(
            spec=spec,
            value="" if values.get(spec.name) is None else str(values.get(spec.name)),
            errors=list(errors.get(spec.name, [])),
        )
        for spec in specs
    ]


def unplaced_errors(specs: Iterable[FieldSpec], errors: Mapping[str, list[str]]) -> list[str]:
    """Errors that belong to no field shown: the form shows them on top."""
    shown = {spec.name for spec in specs}
    return [message for name, messages in errors.items() if name not in shown for message in messages]
