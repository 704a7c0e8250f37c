"""The audit log page's reads: one page of events by keyset on `sequence` (never OFFSET), so a page
deep in a long log costs what the first one does."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from apps.audit.models import AuditEvent

AUDIT_PAGE_SIZE = 50


@dataclass(frozen=True)
class AuditPage:
    events: list[AuditEvent]
    older_than: int | None  # the `before` cursor of the next (older) page, None on the last page
    newer_than: int | None  # the `after` cursor of the previous (newer) page, None on the first page


def audit_page(
    *, events: QuerySet[AuditEvent], before: int | None = None, after: int | None = None, size: int = AUDIT_PAGE_SIZE
) -> AuditPage:
    """Newest first. `before`: events older than that sequence; `after`: the page just newer than
    that sequence. One query for the page, one more only to learn whether newer events exist."""
    if after is not None:
        # Ascending from the cursor, then turned round: the page just above it.
        rows = list(events.filter(sequence__gt=after).order_by("sequence")[: size + 1])
        more_newer = len(rows) > size
        page = list(reversed(rows[:size]))
        older = page[-1].sequence if page else None
        return AuditPage(events=page, older_than=older, newer_than=page[0].sequence if page and more_newer else None)
    if before is not None:
        events = events.filter(sequence__lt=before)
    rows = list(events.order_by("-sequence")[: size + 1])
    page = rows[:size]
    older = page[-1].sequence if len(rows) > size else None
    newer = page[0].sequence if before is not None and page else None
    return AuditPage(events=page, older_than=older, newer_than=newer)


def _detail(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return ", ".join(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def audit_details(event: AuditEvent) -> list[tuple[str, str]]:
    """An event's metadata as (key, text) pairs to read on the page (empty values left out; the
    exports keep everything exactly)."""
    return [(key, _detail(value)) for key, value in sorted(event.metadata.items()) if value not in (None, "", [], {})]
