"""Scrape-time metrics: values read from their source when /metrics is scraped, not counted by any
process. They are registered on the exposition registry only (apps.ops.metrics.metrics_registry),
never written to the multiprocess files, so each appears exactly once per scrape.

Each collector is a function returning metric families; register one with

    @collector_register("anomalies")
    def anomalies() -> Iterable[Metric]:
        yield GaugeMetricFamily("cognitionos_anomalies_open", "...", labels=["kind"])

from a module imported at startup (an AppConfig.ready). Keep them cheap and bounded: a scrape runs
every one of them (one GROUP BY, one Redis round trip), every 15-30 s, on every web pod. A collector
that raises is left out of that scrape and reported by `cognitionos_scrape_collector_success`; the
others still answer. Labels follow docs/metrics.md (never an organization id)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.conf import settings
from django.db.models import Count
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from apps.ops import health
from apps.tenants.models import Organization
from cognitionos.celery import app as celery_app

logger = logging.getLogger(__name__)

CollectorFunction = Callable[[], Iterable[Metric]]
_collectors: dict[str, CollectorFunction] = {}

# The header every task message carries from its publisher (apps.ops.celery_metrics): the queue's
# age is now minus the oldest waiting message's.
SENT_AT_HEADER = "cognitionos_sent_at"
# Plans not offered to every organization (custom and complimentary ones) share one label value.
CUSTOM_PLAN = "custom"


def collector_register(name: str) -> Callable[[CollectorFunction], CollectorFunction]:
    """Add a scrape-time collector (a decorator); registering a name again replaces it."""

    def register(function: CollectorFunction) -> CollectorFunction:
        _collectors[name] = function
        return function

    return register


def collectors() -> dict[str, CollectorFunction]:
    return dict(_collectors)


class ScrapeCollector(Collector):
    """Every registered collector, run at scrape time, each timed and isolated from the others."""

    def collect(self) -> Iterator[Metric]:
        success = GaugeMetricFamily(
            "cognitionos_scrape_collector_success", "1 if the scrape-time collector answered", labels=["collector"]
        )
        duration = GaugeMetricFamily(
            "cognitionos_scrape_collector_duration_seconds",
            "Time the scrape-time collector took",
            labels=["collector"],
        )
        for name, function in collectors().items():
            started = time.perf_counter()
            try:
                families = list(function())
            except Exception:
                logger.exception("metrics collector %s failed", name)
                families, ok = [], 0.0
            else:
                ok = 1.0
            success.add_metric([name], ok)
            duration.add_metric([name], time.perf_counter() - started)
            yield from families
        yield success
        yield duration


def _queue_names() -> list[str]:
    """The queues this deployment configures (a bounded set): the default and any declared or routed."""
    conf = celery_app.conf
    names = {conf.task_default_queue}
    names.update(queue.name for queue in conf.task_queues or ())
    routes = conf.task_routes
    if isinstance(routes, dict):
        names.update(route["queue"] for route in routes.values() if isinstance(route, dict) and "queue" in route)
    return sorted(name for name in names if name)


def _sent_at(raw: bytes | str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)["headers"][SENT_AT_HEADER]
        return float(value)
    except (ValueError, KeyError, TypeError):
        return None


@collector_register("queues")
def queues() -> Iterable[Metric]:
    """Depth and age of every configured queue in the Redis broker: one pipelined round trip
    (LLEN and the oldest message per queue, and the messages workers hold unacknowledged)."""
    depth = GaugeMetricFamily("cognitionos_queue_depth", "Messages waiting in the broker queue", labels=["queue"])
    age = GaugeMetricFamily(
        "cognitionos_queue_oldest_age_seconds",
        "Age of the oldest waiting message (0 when the queue is empty)",
        labels=["queue"],
    )
    names = _queue_names()
    conn: Any
    with celery_app.pool.acquire(block=True, timeout=2) as conn:
        channel = conn.default_channel
        pipe = channel.client.pipeline(transaction=False)
        for name in names:
            pipe.llen(name)
            pipe.lindex(name, -1)  # LPUSH adds on the left, workers take from the right: the oldest
        pipe.hlen(channel.unacked_key)
        answers = pipe.execute()
    now = time.time()
    for index, name in enumerate(names):
        length, oldest = answers[2 * index], answers[2 * index + 1]
        depth.add_metric([name], float(length))
        sent_at = _sent_at(oldest)
        age.add_metric([name], max(0.0, now - sent_at) if sent_at is not None and length else 0.0)
    unacked = GaugeMetricFamily(
        "cognitionos_queue_unacked_messages",
        "Messages delivered to workers and not yet acknowledged (running, or waiting for their countdown)",
        value=float(answers[-1]),
    )
    return [depth, age, unacked]


@collector_register("organizations")
def organizations() -> Iterable[Metric]:
    """Organizations by plan and status: one GROUP BY over the public table. Plans not offered to
    everyone count as `custom`, so the label stays bounded however many custom plans operators make."""
    family = GaugeMetricFamily(
        "cognitionos_organizations", "Organizations by plan and status", labels=["plan", "status"]
    )
    counts: dict[tuple[str, str], int] = {}
    rows = (
        Organization.objects.exclude(schema_name=settings.PUBLIC_SCHEMA_NAME)
        .values_list("plan__code", "plan__public", "status")
        .annotate(count=Count("id"))
        .order_by()
    )
    for plan, public, status, count in rows:
        key = (plan if public else CUSTOM_PLAN, status)
        counts[key] = counts.get(key, 0) + count
    for (plan, status), count in sorted(counts.items()):
        family.add_metric([plan, status], float(count))
    return [family]


@collector_register("dependencies")
def dependencies() -> Iterable[Metric]:
    """1 when PostgreSQL, Redis and the broker answer this web process (the readiness checks)."""
    family = GaugeMetricFamily(
        "cognitionos_dependency_up", "1 if the dependency answered the readiness check", labels=["dependency"]
    )
    for name, check in health.CHECKS.items():
        family.add_metric([name], 0.0 if check() is not None else 1.0)
    return [family]
