"""GET /metrics: Prometheus exposition for operators' scrapers.

With PROMETHEUS_MULTIPROC_DIR set (`cognitionos up` sets it for every process it starts, and so
should any deployment that runs several processes per pod), every process writes its metrics to
files there and this view adds them up across processes (prometheus_client's multiprocess mode):
one scrape shows every gunicorn worker and Celery worker, not whichever answered.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_exposition() -> bytes:
    """Every process's metrics when in multiprocess mode, else this process's."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def metrics_multiproc_prepare(directory: Path) -> None:
    """The directory for the processes about to start, without the files of earlier runs (they
    would be added in)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)


def metrics_process_dead(pid: int) -> None:
    """Drop a dead process's live gauges (its counters stay in the totals)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition, for operators' scrapers only."""
    token = settings.METRICS_TOKEN
    if token and request.headers.get("Authorization") != f"Bearer {token}":
        return HttpResponse(status=401)
    return HttpResponse(metrics_exposition(), content_type=CONTENT_TYPE_LATEST)
