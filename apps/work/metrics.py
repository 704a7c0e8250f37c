"""Prometheus series of background work: how every kind of durable work ends (jobs, workflow steps,
webhook deliveries, knowledge documents and embedding sets), how long it ran and what it cost, and
how workflow runs end. Recorded once, where the runtime ends a row (apps.work.services.work_finish)
and where a run ends (apps.workflows.runs.run_end), after the commit that ended it.

Labels are bounded: `kind` is a registered kind's name, `outcome` a final status. No organization,
job or run id (docs/metrics.md lists every label and its values)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from prometheus_client import Counter, Histogram

# From a webhook sent in a second to a document ingested over half an hour.
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

WORK_FINISHED = Counter(
    "cognitionos_work_finished_total", "Background work that ended, by kind and outcome", ["kind", "outcome"]
)
WORK_DURATION = Histogram(
    "cognitionos_work_duration_seconds",
    "From the first start of a run to the end, of work that started",
    ["kind", "outcome"],
    buckets=DURATION_BUCKETS,
)
WORK_WAIT = Histogram(
    "cognitionos_work_queue_wait_seconds",
    "From creation to the first start (admission and queue time), of work that started",
    ["kind"],
    buckets=DURATION_BUCKETS,
)
# The cost-per-job objective counts jobs under a bound (docs/metrics.md): the bound must be a bucket.
COST_BUCKETS = (0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 50)
WORK_COST = Histogram(
    "cognitionos_work_cost_usd",
    "Provider cost of ended work, USD (as known at its end)",
    ["kind"],
    buckets=COST_BUCKETS,
)
WORK_RETRIES = Counter(
    "cognitionos_work_retries_total", "Runs put back in the queue after a transient failure", ["kind"]
)
RUNS_FINISHED = Counter("cognitionos_workflow_runs_finished_total", "Workflow runs that ended, by outcome", ["outcome"])
RUN_DURATION = Histogram(
    "cognitionos_workflow_run_duration_seconds",
    "From the start of a workflow run to its end",
    ["outcome"],
    buckets=DURATION_BUCKETS,
)


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def work_finished_record(
    *,
    kind: str,
    outcome: str,
    created_at: dt.datetime | None,
    started_at: dt.datetime | None,
    finished_at: dt.datetime | None,
    cost_usd: Decimal | None,
) -> None:
    """One ended row of `kind` (call once, after the commit that ended it)."""
    WORK_FINISHED.labels(kind, outcome).inc()
    duration = _seconds(started_at, finished_at)
    if duration is not None:
        WORK_DURATION.labels(kind, outcome).observe(duration)
    wait = _seconds(created_at, started_at)
    if wait is not None:
        WORK_WAIT.labels(kind).observe(wait)
    if cost_usd is not None:
        WORK_COST.labels(kind).observe(float(cost_usd))


def workflow_run_finished_record(*, outcome: str, started_at: dt.datetime | None, finished_at: dt.datetime) -> None:
    RUNS_FINISHED.labels(outcome).inc()
    duration = _seconds(started_at, finished_at)
    if duration is not None:
        RUN_DURATION.labels(outcome).observe(duration)
