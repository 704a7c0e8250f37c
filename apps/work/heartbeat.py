"""Heartbeats of the work this worker process runs: one thread touches all their rows, per schema
and kind, every JOB_HEARTBEAT_SECONDS. When the process dies the touching stops and the reaper
(apps.work.services.work_reap) takes the rows back."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.work.registry import work_kind

logger = logging.getLogger(__name__)

Key = TypeVar("Key", bound=Hashable)


class Heartbeats(Generic[Key]):
    def __init__(self, *, touch: Callable[[list[Key]], int], name: str) -> None:
        """`touch(keys)` marks those rows alive (in the current schema) and says how many it touched."""
        self._touch, self._name = touch, name
        self._running: defaultdict[str, set[Key]] = defaultdict(set)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def running(self, schema: str, key: Key) -> Iterator[None]:
        with self._lock:
            self._running[schema].add(key)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._running[schema].discard(key)
                if not self._running[schema]:
                    del self._running[schema]

    def beat(self) -> int:
        """Touch everything this process runs; returns how many rows were touched."""
        with self._lock:
            snapshot = {schema: list(keys) for schema, keys in self._running.items()}
        touched = 0
        try:
            for schema, keys in snapshot.items():
                with schema_context(schema):
                    touched += self._touch(keys)
        finally:
            if not connection.in_atomic_block:
                connection.close()  # back to the pool until the next beat
        return touched

    def _loop(self) -> None:
        stop = threading.Event()
        while not stop.wait(settings.JOB_HEARTBEAT_SECONDS):
            try:
                self.beat()
            except Exception:
                logger.exception("%s failed", self._name)


def _touch(keys: list[tuple[str, Any]]) -> int:
    now = timezone.now()
    by_kind: defaultdict[str, list[Any]] = defaultdict(list)
    for name, pk in keys:
        by_kind[name].append(pk)
    return sum(
        work_kind(name).model._default_manager.filter(pk__in=pks, status="running").update(heartbeat_at=now)
        for name, pks in by_kind.items()
    )


# Every kind's running rows of this process, keyed (kind name, primary key).
heartbeats: Heartbeats[tuple[str, Any]] = Heartbeats(touch=_touch, name="work-heartbeats")
