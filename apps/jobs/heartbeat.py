"""Heartbeats of the work this worker process runs: one thread touches all their rows, per schema,
every JOB_HEARTBEAT_SECONDS. When the process dies the touching stops and a reaper takes over.
Jobs use `heartbeats` below; workflow steps make their own `Heartbeats` with their own `touch`."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar
from uuid import UUID

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_tenants.utils import schema_context

logger = logging.getLogger(__name__)

Key = TypeVar("Key", bound=Hashable)


class Heartbeats(Generic[Key]):
    def __init__(self, *, touch: Callable[[list[Key]], int], name: str) -> None:
        """`touch(ids)` marks those rows alive (in the current schema) and says how many it touched."""
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


def _touch_jobs(ids: list[UUID]) -> int:
    from apps.jobs.models import Job, JobStatus

    return Job.objects.filter(pk__in=ids, status=JobStatus.RUNNING).update(heartbeat_at=timezone.now())


heartbeats: Heartbeats[UUID] = Heartbeats(touch=_touch_jobs, name="job-heartbeats")
