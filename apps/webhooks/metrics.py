"""Prometheus series of outgoing webhook attempts (each POST to a receiver). How deliveries end is
the runtime's `cognitionos_work_finished_total{kind="webhook_delivery"}` (apps.work.metrics).
Bounded labels: `outcome` only (docs/metrics.md); never an endpoint, URL or organization."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ATTEMPTS = Counter(
    "cognitionos_webhook_attempts_total",
    "Webhook POSTs by outcome: success, http_3xx|http_4xx|http_5xx, refused (address not allowed), unreachable",
    ["outcome"],
)
ATTEMPT_DURATION = Histogram(
    "cognitionos_webhook_attempt_duration_seconds",
    "Time a receiver took to answer (or the attempt to fail)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def webhook_attempt_record(*, error_class: str, status_code: int | None, seconds: float) -> None:
    if not error_class:
        outcome = "success"
    elif error_class == "http_error" and status_code is not None:
        outcome = f"http_{min(max(status_code // 100, 1), 5)}xx"
    else:
        outcome = error_class if error_class in ("refused", "unreachable") else "other"
    ATTEMPTS.labels(outcome).inc()
    ATTEMPT_DURATION.observe(seconds)
