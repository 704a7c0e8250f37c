"""Celery's side of the metrics, connected in every process (apps.ops.apps.OpsConfig.ready):

- publishers stamp each task message with the time it was sent (the queue-age collector reads it);
- workers count tasks by name and state, and time them;
- a worker's main process serves its metrics on WORKER_METRICS_PORT (default 9808; 0 turns it off,
  as the test settings do unless a test sets the variable): the multiprocess registry when
  PROMETHEUS_MULTIPROC_DIR is set (every pool process of the pod), else this process's registry
  (right for the threads and gevent pools, which run every task in this process).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery import signals
from django.conf import settings
from prometheus_client import Counter, Histogram, start_http_server

from apps.ops.collectors import SENT_AT_HEADER
from apps.ops.metrics import MULTIPROC_ENV, metrics_process_dead, metrics_registry

logger = logging.getLogger(__name__)

TASKS = Counter("cognitionos_celery_tasks_total", "Celery tasks run, by task name and final state", ["task", "state"])
TASK_DURATION = Histogram(
    "cognitionos_celery_task_duration_seconds",
    "Time a Celery task ran",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900),
)

_started: dict[str, float] = {}
_started_lock = threading.Lock()
_exporter: Any = None


@signals.before_task_publish.connect(weak=False)
def _stamp_sent_at(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        headers.setdefault(SENT_AT_HEADER, time.time())


@signals.task_prerun.connect(weak=False)
def _task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        with _started_lock:
            _started[task_id] = time.perf_counter()


@signals.task_postrun.connect(weak=False)
def _task_ended(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    with _started_lock:
        started = _started.pop(task_id or "", None)
    name = getattr(task, "name", None)
    if not name:
        return
    TASKS.labels(name, state or "UNKNOWN").inc()
    if started is not None:
        TASK_DURATION.labels(name).observe(time.perf_counter() - started)


def worker_exporter_start(port: int) -> Any:
    """Serve this worker's metrics on `port` (all interfaces); None if the port is taken (logged:
    the worker runs on without its exporter rather than not at all)."""
    try:
        server, _thread = start_http_server(port, registry=metrics_registry(scrape_collectors=False))
    except OSError as exc:
        logger.warning("worker metrics: port %d unavailable (%s); not exported", port, exc)
        return None
    logger.info(
        "worker metrics on port %d (%s)", port, "multiprocess" if os.environ.get(MULTIPROC_ENV) else "this process"
    )
    return server


@signals.worker_ready.connect(weak=False)
def _worker_ready(**_: Any) -> None:
    global _exporter  # noqa: PLW0603 - one exporter per worker process
    port = int(settings.WORKER_METRICS_PORT or 0)
    if port and _exporter is None:
        _exporter = worker_exporter_start(port)


@signals.worker_shutdown.connect(weak=False)
def _worker_shutdown(**_: Any) -> None:
    global _exporter  # noqa: PLW0603
    if _exporter is not None:
        _exporter.shutdown()
        _exporter.server_close()
        _exporter = None
    metrics_process_dead(os.getpid())


@signals.worker_process_shutdown.connect(weak=False)
def _pool_process_shutdown(pid: int | None = None, **_: Any) -> None:
    """A prefork pool process ended: its live gauges leave the multiprocess totals."""
    metrics_process_dead(pid or os.getpid())
