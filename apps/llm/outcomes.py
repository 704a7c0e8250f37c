"""What the engine answers: a settled outcome, or a started stream."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class ChatOutcome:
    """An answered call (chat or embeddings): the provider-shaped body and what it cost."""

    body: dict[str, Any]
    request_id: str
    model: str
    cost_usd: Decimal
    cache: str  # miss, l1, l2, l3, l4
    simulated: bool


@dataclass
class ChatStream:
    """A started stream: its chunks (OpenAI `chat.completion.chunk` dicts), then the cost."""

    request_id: str
    model: str
    simulated: bool
    chunks: Iterator[dict[str, Any]]
    cache: str = "miss"  # or the exact layer (l1, l2, l4) whose answer is replayed as a stream
