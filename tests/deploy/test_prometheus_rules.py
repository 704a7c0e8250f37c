"""deploy/prometheus: alert and SLO rules pass `promtool check rules`, every alert has a promtool
unit test that makes it fire (and not before its `for`), the five SLOs have multiwindow
multi-burn-rate alerts, and every metric name in the rules is one the code exports."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.metrics_exercise import (
    EXTERNAL_SERIES,
    Exported,
    _fresh_llm_state,
    exported_metrics,
    promql_metric_names,
    recording_rule_names,
)
from tests.support.debian import debian_command_ensure

__all__ = ["_fresh_llm_state", "exported_metrics"]

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
SLOS = ("availability", "gateway_latency", "job", "job_cost")


def _rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in sorted((PROMETHEUS / "rules").glob("*.yaml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def _alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


@pytest.fixture(scope="module")
def promtool() -> str:
    return debian_command_ensure("promtool", "prometheus")


def test_promtool_accepts_the_rules(promtool: str) -> None:
    files = sorted(str(path) for path in (PROMETHEUS / "rules").glob("*.yaml"))
    checked = subprocess.run([promtool, "check", "rules", *files], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_unit_tests_pass(promtool: str) -> None:
    tests = sorted(str(path) for path in (PROMETHEUS / "tests").glob("*.yaml"))
    ran = subprocess.run(
        [promtool, "test", "rules", *tests], cwd=PROMETHEUS / "tests", capture_output=True, text=True, check=False
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_every_alert_has_a_test_that_fires_it_and_one_before_it_fires() -> None:
    alerts = _alerts()
    assert len(alerts) >= 20
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in (PROMETHEUS / "tests").glob("*.yaml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    assert set(alerts) - fired == set()
    assert set(alerts) - quiet == set()
    docs = (ROOT / "docs" / "metrics.md").read_text()
    for name, rule in alerts.items():
        assert f"#### {name}\n" in docs, name  # its runbook line
        assert rule["labels"]["severity"] in ("page", "critical", "warning", "info")
        assert rule["annotations"]["runbook"] == f"docs/metrics.md#{name.lower()}"


def test_five_slos_with_multiwindow_multi_burn_rate_alerts() -> None:
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    for slo in SLOS:
        for window in ("5m", "30m", "1h", "6h"):
            assert f"cognitionos:slo_{slo}_errors:ratio_rate{window}" in recorded
    for window in ("5m", "30m", "1h", "6h"):
        assert f"cognitionos:slo_cache_hits:ratio_rate{window}" in recorded
    burns = [rule for name, rule in _alerts().items() if name.startswith("CognitionOSSLO") and "Burn" in name]
    assert len(burns) == 2 * len(SLOS)
    for rule in burns:
        expr = rule["expr"]
        if rule["alert"].endswith("FastBurn"):
            assert "ratio_rate1h > (14.4 *" in expr and "ratio_rate5m > (14.4 *" in expr
        else:
            assert "ratio_rate6h > (6 *" in expr and "ratio_rate30m > (6 *" in expr
    cache = [name for name in _alerts() if name.startswith("CognitionOSSLOCacheEffectiveness")]
    assert len(cache) == 2


def test_every_metric_in_the_rules_is_exported_by_the_code(exported_metrics: Exported) -> None:
    recorded = recording_rule_names(PROMETHEUS / "rules")
    known = exported_metrics.series_names | recorded | EXTERNAL_SERIES
    unknown = {name for rule in _rules() for name in promql_metric_names(rule["expr"]) if name not in known}
    assert unknown == set()
    # The rules of the test files name only series of the rules' inputs, which must be real too.
    for path in (PROMETHEUS / "tests").glob("*.yaml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for series in test["input_series"]:
                assert promql_metric_names(series["series"]) <= known, series["series"]
