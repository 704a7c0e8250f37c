"""deploy/grafana: four dashboards and their provisioning; every panel's query names only series the
code exports (read from the live registry after exercising the app) or recording rules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.ops.metrics_exercise import (
    EXTERNAL_SERIES,
    Exported,
    _fresh_llm_state,
    exported_metrics,
    promql_metric_names,
    recording_rule_names,
)

__all__ = ["_fresh_llm_state", "exported_metrics"]

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
TITLES = {
    "CognitionOS / System Health",
    "CognitionOS / LLM Performance",
    "CognitionOS / Business Metrics",
    "CognitionOS / Cost Tracking",
}


def _dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted((GRAFANA / "dashboards").glob("*.json"))}


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expression) of every target."""
    return [
        (name, panel["title"], target["expr"])
        for name, dashboard in _dashboards().items()
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]


def test_four_dashboards_with_unique_ids_and_their_provisioning() -> None:
    dashboards = _dashboards()
    assert {dashboard["title"] for dashboard in dashboards.values()} == TITLES
    assert len({dashboard["uid"] for dashboard in dashboards.values()}) == 4
    for dashboard in dashboards.values():
        panels = [panel for panel in _panels(dashboard["panels"]) if panel["type"] != "row"]
        assert len(panels) >= 10
        assert len({panel["id"] for panel in _panels(dashboard["panels"])}) == len(list(_panels(dashboard["panels"])))
        assert all(panel["datasource"]["uid"] == "${datasource}" for panel in panels)
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards.yaml").read_text())["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"]
    [source] = yaml.safe_load((GRAFANA / "provisioning" / "datasources.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus"


def test_metric_names_are_read_from_promql() -> None:
    assert promql_metric_names(
        "histogram_quantile(0.95, sum by (le, provider) "
        '(rate(cognitionos_llm_provider_latency_seconds_bucket{model=~"a|b"}[5m])))'
    ) == {"cognitionos_llm_provider_latency_seconds_bucket"}
    assert promql_metric_names(
        'sum(rate(x_total{status=~"5.."}[1h] offset 1d)) / on (job) group_left sum(y) > 3 * 1e3 and cognitionos:a:b1h'
    ) == {"x_total", "y", "cognitionos:a:b1h"}
    assert promql_metric_names('absent(up{job="cognitionos-web"} == 1)') == {"up"}


def test_every_panel_queries_series_the_code_exports(exported_metrics: Exported) -> None:
    known = (
        exported_metrics.series_names | recording_rule_names(ROOT / "deploy" / "prometheus" / "rules") | EXTERNAL_SERIES
    )
    queries = _queries()
    assert len(queries) >= 50
    unknown = []
    for dashboard, title, expr in queries:
        names = promql_metric_names(expr)
        assert names, (dashboard, title, expr)
        unknown += [f"{dashboard} / {title}: {name}" for name in sorted(names - known)]
    assert unknown == []
    # And the check is not vacuous: a misspelt series would be caught.
    assert "cognitionos_llm_cost_usd" not in known and "cognitionos_llm_cost_usd_total" in known
