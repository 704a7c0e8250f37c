"""`ApiKey.last_used_at` without a database write per request.

Resolving a key notes its id and the time in the process's background batch (no I/O;
cognitionos/background_batch.py, which keeps each key's latest use); its thread writes them every
API_KEY_LAST_USED_FLUSH_SECONDS in one UPDATE, and once more at exit. The column is
late by up to that interval, and a crashed process loses its last interval of notes: it is a hint
for people ("used 2 minutes ago"), never a basis for access or billing.
"""

from __future__ import annotations

import datetime as dt
import time

from django.conf import settings
from django.db import connection, transaction

from cognitionos.background_batch import BackgroundBatch


def _write(uses: list[tuple[int, float]]) -> list[tuple[int, float]]:
    latest = dict(uses)  # one per key: the batch keeps each key's latest use
    ids = sorted(latest)  # one lock order for every writer
    times = [dt.datetime.fromtimestamp(latest[key_id], tz=dt.UTC) for key_id in ids]
    with transaction.atomic(), connection.cursor() as cursor:
        # One statement per flush, and never backwards (another process may have written later).
        cursor.execute(
            """
            UPDATE public.apikeys_apikey AS k SET last_used_at = u.at
            FROM unnest(%s::bigint[], %s::timestamptz[]) AS u(id, at)
            WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)
            """,
            [ids, times],
        )
    return []


# Key id -> its latest use (seconds since the epoch), written every API_KEY_LAST_USED_FLUSH_SECONDS.
_used: BackgroundBatch[tuple[int, float]] = BackgroundBatch(
    "apikey-last-used",
    write=_write,
    interval_s=lambda: float(settings.API_KEY_LAST_USED_FLUSH_SECONDS),
    keep_on_failure=True,
    key=lambda use: use[0],
)


def apikey_used(key_id: int) -> None:
    """Note that a key was just used (the resolver calls this on every request it authenticates)."""
    _used.add((key_id, time.time()))


def apikey_last_used_flush() -> int:
    """Write the noted uses now. Returns how many keys were pending."""
    return _used.flush()
