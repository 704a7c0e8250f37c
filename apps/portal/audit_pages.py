"""The audit log page's reads (its pages are apps.portal.paging's keyset pages on `id`)."""

from __future__ import annotations

import json
from typing import Any

from apps.audit.models import AuditEvent


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
