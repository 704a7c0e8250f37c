"""`ApiKey.last_used_at` without a database write per request.

Resolving a key notes its id and the time in a dict of the process (no I/O); a daemon thread writes
the dict every API_KEY_LAST_USED_FLUSH_SECONDS in one UPDATE, and once more at exit. The column is
late by up to that interval, and a crashed process loses its last interval of notes: it is a hint
for people ("used 2 minutes ago"), never a basis for access or billing.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import threading
import time

from django.conf import settings
from django.db import connection, transaction

logger = logging.getLogger(__name__)


class _UsedKeys:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, float] = {}  # key id -> last use, seconds since the epoch
        self._thread: threading.Thread | None = None

    def note(self, key_id: int, at: float) -> None:
        # A plain dict store under the GIL: the last writer's time wins, and times only grow.
        self._pending[key_id] = at
        if self._thread is None and settings.API_KEY_LAST_USED_FLUSH_SECONDS > 0:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="apikey-last-used", daemon=True)
                    self._thread.start()
                    atexit.register(self.flush)

    def flush(self) -> int:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        try:
            _write(pending)
        except Exception:
            logger.exception("API keys' last use could not be written; kept for the next flush")
            with self._lock:
                for key_id, at in pending.items():
                    self._pending[key_id] = max(at, self._pending.get(key_id, at))
        return len(pending)

    def _run(self) -> None:
        while True:
            interval = float(settings.API_KEY_LAST_USED_FLUSH_SECONDS)
            time.sleep(interval if interval > 0 else 1.0)  # never a busy loop if it is set to 0 later
            if self._pending:
                self.flush()
                connection.close()


def _write(pending: dict[int, float]) -> None:
    ids = sorted(pending)  # one lock order for every writer
    times = [dt.datetime.fromtimestamp(pending[key_id], tz=dt.UTC) for key_id in ids]
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


_used = _UsedKeys()


def apikey_used(key_id: int) -> None:
    """Note that a key was just used (the resolver calls this on every request it authenticates)."""
    _used.note(key_id, time.time())


def apikey_last_used_flush() -> int:
    """Write the noted uses now. Returns how many keys were pending."""
    return _used.flush()
