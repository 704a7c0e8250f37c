"""The anomaly detector's beat task (apps.ops.anomalies): beat entry "ops-anomalies-detect", every 15 s."""

from __future__ import annotations

from celery import shared_task

from apps.ops.anomalies import anomalies_detect


@shared_task(ignore_result=True)
def anomalies_detect_run() -> dict[str, int]:
    """Judge the traffic since the last run; open, act on and resolve anomalies. Runs in the public
    schema (it reads Redis and public tables only); a second run at the same time does nothing."""
    report = anomalies_detect()
    return {"buckets": report.buckets, "samples": report.samples, "opened": len(report.opened)}
