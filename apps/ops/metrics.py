"""GET /metrics: Prometheus exposition for operators' scrapers.

With PROMETHEUS_MULTIPROC_DIR set (`cognitionos up` sets it for every process it starts, and so
should any deployment that runs several processes per pod), every process writes its metrics to
files there and this view adds them up across processes (prometheus_client's multiprocess mode):
one scrape shows every web process and Celery worker, not whichever answered.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django_prometheus.middleware import PrometheusAfterMiddleware  # type: ignore[import-untyped]
from django_prometheus.utils import Time  # type: ignore[import-untyped]
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# prometheus_client's file of one process's gauges that describe live processes (mark_process_dead).
_LIVE_GAUGES = re.compile(r"gauge_live(?:all|sum|max|min|mostrecent)_(\d+)\.db")


class _ProcessMetrics(Collector):
    """This process's default registry, as one collector of another registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def metrics_registry(*, scrape_collectors: bool) -> CollectorRegistry:
    """What a scrape shows: every process's metrics in multiprocess mode (read from the files at
    each collect), else this process's; with `scrape_collectors`, also the values read at scrape
    time (apps.ops.collectors: queues, organizations, dependencies), which are never written to
    the files and so appear once. Web processes answer /metrics with them; a worker's exporter
    leaves them to the web pods."""
    registry = CollectorRegistry()
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        metrics_dead_processes_drop(Path(directory))
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ProcessMetrics())
    if scrape_collectors:
        from apps.ops.collectors import ScrapeCollector  # its models load after settings

        registry.register(ScrapeCollector())
    return registry


def metrics_exposition() -> bytes:
    """Every process's metrics when in multiprocess mode, else this process's, and the scrape-time ones."""
    return generate_latest(metrics_registry(scrape_collectors=True))


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


def metrics_dead_processes_drop(directory: Path) -> None:
    """Drop the live gauges of every process that ended without saying so: a web process the server
    replaced, any process killed outright. No server hook is needed for it, and none can be missed."""
    for path in directory.glob("gauge_live*.db"):
        found = _LIVE_GAUGES.fullmatch(path.name)
        if found and not _process_alive(int(found[1])):
            multiprocess.mark_process_dead(int(found[1]), path=str(directory))  # type: ignore[no-untyped-call]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def metrics_authorized(request: HttpRequest) -> bool:
    """Whether the request carries METRICS_TOKEN. Unset, /metrics is open: production settings refuse
    to load without a token, so only development and the test suite run that way."""
    token: str = settings.METRICS_TOKEN
    if not token:
        return True
    presented = request.headers.get("Authorization", "")
    # Constant time: how long a wrong token takes must not tell how much of it was right.
    return hmac.compare_digest(presented.encode(), f"Bearer {token}".encode())


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition, for operators' scrapers only."""
    if not metrics_authorized(request):
        response = HttpResponse(status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics_exposition(), content_type=CONTENT_TYPE_LATEST)


class BoundedPrometheusAfterMiddleware(PrometheusAfterMiddleware):
    """django-prometheus's response middleware with every `method` label bounded: its latency
    histogram takes the request's method as sent, so a client inventing methods would add series
    without end. Here an unknown method is `<invalid method>` on every series (docs/metrics.md).

    The same series, written for less: it records nine of them per request, and prometheus_client's
    `labels()` checks and locks on every call, so each labelled series is looked up once per process
    and kept; and the request's two headers are read from the environ, where django-prometheus's
    `request.headers` would build a copy of every header."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bounded as the labels are: every value comes from the code, the URL names or _method.
        self._series: dict[tuple[object, ...], Any] = {}

    def label_metric(self, metric: Any, request: Any, response: Any = None, **labels: Any) -> Any:
        if not labels:
            return metric
        if "method" in labels:
            labels["method"] = self._method(request)
        key = (metric, *labels.items())
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metric.labels(**labels)
        return series

    def process_request(self, request: Any) -> None:
        self.label_metric(self.metrics.requests_by_method, request, method=request.method).inc()
        self.label_metric(self.metrics.requests_by_transport, request, transport=self._transport(request)).inc()
        if request.META.get("HTTP_X_REQUESTED_WITH") == "XMLHttpRequest":
            self.metrics.requests_ajax.inc()
        try:
            content_length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:  # not a number: none, as Django reads the body (the gateway refuses it, 400)
            content_length = 0
        self.metrics.requests_body_bytes.observe(content_length)
        request.prometheus_after_middleware_event = Time()
