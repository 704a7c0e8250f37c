"""Every label of every cognitionos_* and django_* series is in docs/metrics.md's allowlist, with a
value from its listed set where the allowlist lists one: checked on the live registry after the
app was exercised, and on every registered metric's label names (also those without samples yet)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

from django.test import Client
from prometheus_client import REGISTRY

from apps.tenants.models import Organization
from tests.ops.metrics_exercise import (
    Exported,
    _fresh_llm_state,
    exported_metrics,
    exposition_parse,
)

__all__ = ["_fresh_llm_state", "exported_metrics"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
CHECKED_PREFIXES = ("cognitionos_", "django_")


@dataclass(frozen=True)
class Allowed:
    label: str
    series: tuple[str, ...]  # globs
    values: frozenset[str] | None  # None: bounded by code or configuration, name checked only


def allowlist() -> list[Allowed]:
    text = DOC.read_text()
    section = text.split("<!-- label-allowlist:start -->")[1].split("<!-- label-allowlist:end -->")[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        values = re.findall(r"`([^`]+)`", cells[2])
        rows.append(
            Allowed(
                label=cells[0].strip("`"),
                series=tuple(re.findall(r"`([^`]+)`", cells[1])),
                values=frozenset(values) if values else None,
            )
        )
    return rows


def _rows_for(rows: list[Allowed], label: str, names: list[str]) -> list[Allowed]:
    return [
        row
        for row in rows
        if row.label == label and any(fnmatch.fnmatchcase(name, glob) for glob in row.series for name in names)
    ]


def label_violations(exported: Exported, rows: list[Allowed]) -> list[str]:
    problems: list[str] = []
    for name, labels in exported.samples:
        if not name.startswith(CHECKED_PREFIXES):
            continue
        # A counter's or histogram's `_created` sample carries the labels of its `_total` or buckets.
        base = name.removesuffix("_created")
        names = [name, base, f"{base}_total", f"{base}_bucket"] if name.endswith("_created") else [name]
        for label, value in labels.items():
            matching = _rows_for(rows, label, names)
            if not matching:
                problems.append(f"{name}: label {label!r} is not in the allowlist")
            elif all(row.values is not None for row in matching) and not any(
                value in (row.values or ()) for row in matching
            ):
                problems.append(f"{name}: {label}={value!r} is not an allowed value")
    return sorted(set(problems), key=problems.index)


def test_the_allowlist_is_read_from_the_docs() -> None:
    rows = allowlist()
    assert len(rows) >= 25
    kinds = _rows_for(rows, "kind", ["cognitionos_work_finished_total"])
    assert kinds and "job" in (kinds[0].values or ())
    assert _rows_for(rows, "model", ["cognitionos_llm_cost_usd_total"])[0].values is None


def test_every_label_of_the_exercised_app_is_allowed_and_bounded(
    exported_metrics: Exported, two_tenants: tuple[Organization, Organization]
) -> None:
    rows = allowlist()
    checked = [labels for name, labels in exported_metrics.samples if name.startswith("cognitionos_") and labels]
    assert len(checked) > 30  # the exercise reached the instrumented paths
    seen = {(name, tuple(sorted(labels))) for name, labels in exported_metrics.samples}
    for expected in [
        ("cognitionos_work_finished_total", ("kind", "outcome")),
        ("cognitionos_llm_requests_total", ("cache", "model", "provider", "status")),
        ("cognitionos_webhook_attempts_total", ("outcome",)),
        ("cognitionos_workflow_runs_finished_total", ("outcome",)),
        ("cognitionos_queue_depth", ("queue",)),
        ("cognitionos_organizations", ("plan", "status")),
        ("django_db_execute_total", ("alias", "vendor")),
        ("django_http_responses_total_by_status_view_method_total", ("method", "status", "view")),
    ]:
        assert expected in seen, expected
    assert label_violations(exported_metrics, rows) == []
    text_values = {value for _, labels in exported_metrics.samples for value in labels.values()}
    for organization in two_tenants:
        assert organization.slug not in text_values and organization.schema_name not in text_values
        assert str(organization.pk) not in {labels.get("organization") for _, labels in exported_metrics.samples}


def test_every_registered_metric_declares_only_allowed_label_names() -> None:
    rows = allowlist()
    problems = []
    for collector in list(REGISTRY._collector_to_names):
        name, labelnames = getattr(collector, "_name", ""), getattr(collector, "_labelnames", ())
        if not name.startswith(CHECKED_PREFIXES):
            continue
        candidates = [name, f"{name}_total", f"{name}_bucket", f"{name}_count"]
        problems += [f"{name}: {label}" for label in labelnames if not _rows_for(rows, label, candidates)]
    assert problems == []


def test_a_violation_is_reported() -> None:
    """The check itself fails on an organization label and on a value outside a listed set."""
    exported = Exported(
        samples=[
            ("cognitionos_work_finished_total", {"kind": "job", "outcome": "succeeded", "organization": "42"}),
            ("cognitionos_dependency_up", {"dependency": "tenant-a-db"}),
        ]
    )
    assert label_violations(exported, allowlist()) == [
        "cognitionos_work_finished_total: label 'organization' is not in the allowlist",
        "cognitionos_dependency_up: dependency='tenant-a-db' is not an allowed value",
    ]


def test_an_invented_http_method_does_not_become_a_label_value(db: None) -> None:
    Client().generic("BREW", "/metrics", HTTP_HOST="localhost")
    exported = exposition_parse(Client().get("/metrics", HTTP_HOST="localhost").content.decode())
    methods = {labels.get("method") for name, labels in exported.samples if name.startswith("django_http_")}
    assert "BREW" not in methods
    assert "<invalid method>" in methods
    assert label_violations(exported, allowlist()) == []
