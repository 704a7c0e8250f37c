"""Heartbeats of the jobs this worker process runs: one thread touches all their rows, per schema,
every JOB_HEARTBEAT_SECONDS. When the process dies the touching stops and the reaper takes over."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_tenants.utils import schema_context

logger = logging.getLogger(__name__)


class Heartbeats:
    def __init__(self) -> None:
        self._running: defaultdict[str, set[UUID]] = defaultdict(set)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def running(self, schema: str, job_id: UUID) -> Iterator[None]:
        with self._lock:
            self._running[schema].add(job_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="job-heartbeats", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._running[schema].discard(job_id)
                if not self._running[schema]:
                    del self._running[schema]

    def beat(self) -> int:
        """Touch every running job of this process; returns how many rows were touched."""
        from apps.jobs.models import Job, JobStatus

        with self._lock:
            snapshot = {schema: list(ids) for schema, ids in self._running.items()}
        touched = 0
        try:
            for schema, ids in snapshot.items():
                with schema_context(schema):
                    touched += Job.objects.filter(pk__in=ids, status=JobStatus.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
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
                logger.exception("job heartbeat failed")


heartbeats = Heartbeats()
