"""The hash chain of an organization's audit log: how one event's hash is computed.

Each event's `hash` is SHA-256 over a canonical serialization of its fields and the previous
event's hash (the first event chains from GENESIS_HASH), so changing, removing or reordering any
stored event breaks every link after it. The serialization is a compact JSON array with sorted
keys, tagged with a version: it must never change for version 1, or every stored chain breaks.

What is hashed is what the database gives back, not what the caller passed: metadata is stored as
jsonb, which keeps numbers as decimals, so a float with an integral value comes back as an integer
(1e16 reads back as 10000000000000000). `canonical_metadata` applies the same rule on both sides.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

CHAIN_VERSION = "cognitionos-audit-v1"
GENESIS_HASH = hashlib.sha256(CHAIN_VERSION.encode() + b":genesis").hexdigest()


@dataclass(frozen=True)
class ChainFields:
    """The hashed fields of one event, as stored."""

    sequence: int
    occurred_at: dt.datetime
    actor_kind: str
    actor_id: str
    actor_label: str
    action: str
    target_type: str
    target_id: str
    target_label: str
    metadata: Any
    previous_hash: str


def canonical_metadata(value: Any) -> Any:
    """Metadata in the form that survives a round trip through jsonb unchanged."""
    if isinstance(value, dict):
        return {str(key): canonical_metadata(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [canonical_metadata(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        # jsonb prints 1e+300 as 10**300 exactly (not the double's binary value, which int() gives).
        return int(Decimal(repr(value)))
    return value


def occurred_at_text(value: dt.datetime) -> str:
    """A fixed rendering: UTC, microseconds (PostgreSQL's precision), always the same width."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(fields: ChainFields) -> str:
    serialized = json.dumps(
        [
            CHAIN_VERSION,
            fields.sequence,
            occurred_at_text(fields.occurred_at),
            fields.actor_kind,
            fields.actor_id,
            fields.actor_label,
            fields.action,
            fields.target_type,
            fields.target_id,
            fields.target_label,
            canonical_metadata(fields.metadata),
            fields.previous_hash,
        ],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return hashlib.sha256(serialized.encode("ascii")).hexdigest()
