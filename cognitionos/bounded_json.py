"""JSON from strangers, parsed within bounds: a size limit checked before reading, a nesting limit.

Python's `json` recurses per level, so a 100,000-deep array raises RecursionError (a 500 if
uncaught), and a few hundred levels that do parse still blow up whatever walks the value later
(hashing, serialising, pricing). Every body from outside goes through `json_loads_bounded`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

# Deep enough for any tool schema we have seen (OpenAI caps function schemas at 5 levels of
# nesting); shallow enough that every recursive walk of the value stays far from the stack limit.
MAX_JSON_DEPTH = 64


class JsonTooDeep(ValueError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the JSON nests deeper than {limit} levels")
        self.limit = limit


def json_depth_check(value: Any, *, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise JsonTooDeep if arrays and objects nest deeper than `limit` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            raise JsonTooDeep(limit)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def json_loads_bounded(
    data: bytes | str, *, limit: int = MAX_JSON_DEPTH, parse_constant: Callable[[str], Any] | None = None
) -> Any:
    """`json.loads`, refusing nesting deeper than `limit` with JsonTooDeep (a ValueError).

    Other malformed input raises ValueError as `json.loads` does. `parse_constant` is json's own
    hook for NaN and Infinity (which PostgreSQL's JSON refuses)."""
    try:
        value = json.loads(data, parse_constant=parse_constant)
    except RecursionError as exc:
        raise JsonTooDeep(limit) from exc
    brackets = data.count(b"[") + data.count(b"{") if isinstance(data, bytes) else data.count("[") + data.count("{")
    if brackets > limit:  # fewer brackets can't nest deeper
        json_depth_check(value, limit=limit)
    return value
