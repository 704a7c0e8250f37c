"""`cognitionos_anomalies_open{kind}`: the anomalies open now, read from the public `Anomaly` rows
at scrape time (one indexed GROUP BY), so every process and pod reports the same value. Every kind
is always reported (0 when none is open); no organization id is a label."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Count
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from apps.ops.anomaly import KINDS
from apps.ops.collectors import collector_register
from apps.ops.models import Anomaly


@collector_register("anomalies")
def anomalies_open() -> Iterable[Metric]:
    family = GaugeMetricFamily(
        "cognitionos_anomalies_open", "Anomalies open now (apps.ops.anomalies), by kind", labels=["kind"]
    )
    counts = dict(Anomaly.objects.filter(resolved_at=None).values_list("kind").annotate(open=Count("id")).order_by())
    for kind in KINDS:
        family.add_metric([kind], float(counts.get(kind, 0)))
    yield family
