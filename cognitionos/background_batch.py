"""Writes a request need not wait for, gathered in the process and made together by a daemon thread
every few seconds (and at exit): cache-hit ledger rows, gateway calls' settlements and the folds
of settled budget holds (apps.llm.budgets), the routing figures of each provider attempt
(apps.llm.router), API keys' last use (apps.apikeys.usage), the progress streams' notices
(apps.work.progress). One mechanism, so each caller says only what it writes.

`write` returns the items it could not write (or raises: none written). They are kept for the next
flush when `keep_on_failure` (rows that must land), dropped with a warning otherwise (figures a later
attempt replaces); either way what waits is bounded by `max_pending`, past which the oldest go, logged.
With `key`, a later item replaces a waiting one of the same key (a key's last use: only the latest
counts). With an interval of 0 no thread runs: the owner flushes (the tests do). The thread gives
its database connection back to the pool after each flush. What waits is written when the process
ends normally, a multiprocessing worker's too.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import multiprocessing.util
import os
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from django.db import connection

Item = TypeVar("Item")

logger = logging.getLogger(__name__)


class BackgroundBatch(Generic[Item]):
    def __init__(
        self,
        name: str,
        *,
        write: Callable[[list[Item]], list[Item]],
        interval_s: Callable[[], float],
        keep_on_failure: bool,
        max_pending: int = 100_000,
        key: Callable[[Item], Hashable] | None = None,
    ) -> None:
        self.name = name
        self._write = write
        self._interval_s = interval_s
        self._keep_on_failure = keep_on_failure
        self._max_pending = max_pending
        self._key = key
        self._lock = threading.Lock()
        self._pending: dict[Hashable, Item] = {}  # in the order added
        self._numbers = itertools.count()  # the keys of items without one
        self._thread_started = False
        self._exit_registered = False
        # A forked child starts empty, with a lock and (on its first item) a thread of its own: its
        # parent writes what it holds.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._pending = {}
        self._thread_started = False
        self._exit_registered = False  # a finalizer runs only in the process that registered it

    def _key_of(self, item: Item) -> Hashable:
        return self._key(item) if self._key is not None else next(self._numbers)

    def add(self, item: Item) -> None:
        """Write `item` with the next batch."""
        with self._lock:
            self._pending[self._key_of(item)] = item
            if len(self._pending) > self._max_pending:
                for oldest in list(itertools.islice(self._pending, len(self._pending) - self._max_pending)):
                    del self._pending[oldest]
                logger.error("%s: more than %d items waiting; the oldest were dropped", self.name, self._max_pending)
            if not self._thread_started and self._interval_s() > 0:
                self._thread_started = True
                threading.Thread(target=self._run, name=self.name, daemon=True).start()
                if not self._exit_registered:
                    self._exit_registered = True
                    atexit.register(self.flush)
                    # A process that multiprocessing forked (Granian's web workers) ends without
                    # running atexit hooks, but with multiprocessing's finalizers.
                    multiprocessing.util.Finalize(None, self.flush, exitpriority=0)

    def flush(self) -> int:
        """Write what waits now. Returns how many items were waiting."""
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        if not pending:
            return 0
        try:
            unwritten = self._write(pending)
        except Exception:
            logger.exception("%s: writing %d items failed", self.name, len(pending))
            unwritten = pending
        if unwritten and self._keep_on_failure:
            logger.warning("%s: %d items not written; kept for the next flush", self.name, len(unwritten))
            with self._lock:
                # Ahead of what came meanwhile, which replaces them where it has the same key.
                self._pending = {**{self._key_of(item): item for item in unwritten}, **self._pending}
        elif unwritten:
            logger.warning("%s: %d items not written; dropped", self.name, len(unwritten))
        return len(pending)

    def _run(self) -> None:
        while True:
            interval = self._interval_s()
            time.sleep(interval if interval > 0 else 1.0)  # never a busy loop if it is set to 0 later
            self.flush()
            connection.close()  # this thread's own, if the write took one
