"""Heartbeats of the workflow steps this worker process runs: one thread touches their rows (and
their runs'), per schema, every JOB_HEARTBEAT_SECONDS. When the process dies the touching stops,
and the reaper sends the steps again; the next worker takes them over."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_tenants.utils import schema_context

logger = logging.getLogger(__name__)


class StepHeartbeats:
    def __init__(self) -> None:
        self._running: defaultdict[str, set[int]] = defaultdict(set)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def running(self, schema: str, step_id: int) -> Iterator[None]:
        with self._lock:
            self._running[schema].add(step_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="workflow-heartbeats", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._running[schema].discard(step_id)
                if not self._running[schema]:
                    del self._running[schema]

    def beat(self) -> int:
        """Touch every running step of this process and its run; returns how many steps."""
        from apps.workflows.models import StepRun, StepStatus, WorkflowRun

        with self._lock:
            snapshot = {schema: list(ids) for schema, ids in self._running.items()}
        touched = 0
        try:
            for schema, ids in snapshot.items():
                with schema_context(schema):
                    now = timezone.now()
                    steps = StepRun.objects.filter(pk__in=ids, status=StepStatus.RUNNING)
                    touched += steps.update(heartbeat_at=now)
                    WorkflowRun.objects.filter(steps__pk__in=ids).update(heartbeat_at=now)
        finally:
            connection.close()  # back to the pool until the next beat
        return touched

    def _loop(self) -> None:
        stop = threading.Event()
        while not stop.wait(settings.JOB_HEARTBEAT_SECONDS):
            try:
                self.beat()
            except Exception:
                logger.exception("workflow step heartbeat failed")


heartbeats = StepHeartbeats()
