"""The app exercised once (a gateway call through the fake provider, answered again from the cache;
a job; a webhook delivered and one refused; a workflow-run end; a budget hold swept; a scrape),
then its /metrics exposition parsed: what the dashboards, the alert rules and the label allowlist
are checked against. Import the fixture `exported_metrics` into a test module to use it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.test import Client
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from apps.apikeys.services import apikey_create
from apps.jobs.services import job_execute, job_submit
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization
from apps.webhooks.services import webhook_delivery_attempt, webhook_endpoint_create, webhook_event_emit
from tests.factories import TEST_ACTOR
from tests.llm.conftest import _fresh_llm_state, gateway_client
from tests.support.fake_provider import FakeProvider
from tests.webhooks.receiver import http_receiver
from tests.workflows.factories import run_through, workflow_make

# Fixtures for the modules that import `exported_metrics`.
__all__ = ["_fresh_llm_state", "exported_metrics"]

# Series suffixes by metric type (OpenMetrics): what a PromQL expression may name for a family.
SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "unknown": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
}


@dataclass
class Exported:
    # family name -> type, as the exposition declares them (every registered family, with or
    # without samples yet)
    families: dict[str, str] = field(default_factory=dict)
    # every sample: (series name, labels)
    samples: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    @property
    def series_names(self) -> set[str]:
        """Every name a query may use: each family's name with its type's suffixes."""
        return {f"{name}{suffix}" for name, kind in self.families.items() for suffix in SUFFIXES.get(kind, ("",))}


def exposition_parse(text: str) -> Exported:
    exported = Exported()
    for family in text_string_to_metric_families(text):
        exported.families[family.name] = family.type
        exported.samples.extend((sample.name, dict(sample.labels)) for sample in family.samples)
    return exported


MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello to the metrics"}]
HELLO = {
    "messages": [{"role": "user", "content": "Say hello to the metrics"}],
    "model": "gpt-4o-mini",
    "max_tokens": 20,
}


def app_exercise(organization: Organization, run_on_commit: Callable[..., Any]) -> Exported:
    """Drive each instrumented path once in `organization`, then scrape /metrics."""
    tenant_connection().set_schema_to_public()
    key = apikey_create(organization=organization, name="metrics", actor=TEST_ACTOR).key
    client = gateway_client(key)
    for _ in range(2):  # a provider call, then the same request from the cache
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    with organization_schema(organization), run_on_commit(execute=True):
        job = job_submit(organization=organization, principal=TEST_ACTOR, request=dict(HELLO))
    with organization_schema(organization), run_on_commit(execute=True):
        job_execute(organization=organization, job_id=job.pk)
    with http_receiver(statuses=[503, 200]) as receiver, organization_schema(organization):
        _, receiver.secret = webhook_endpoint_create(
            organization=organization, actor=TEST_ACTOR, url=receiver.url, events=["job.*"]
        )
        [delivery] = webhook_event_emit(organization=organization, event_type="job.succeeded", payload={"job": {}})
        with run_on_commit(execute=True):
            webhook_delivery_attempt(organization=organization, delivery_id=delivery.pk)  # 503: retried later
    with organization_schema(organization), run_on_commit(execute=True):
        run = run_through(organization, workflow_make(organization), {"text": "Metrics, briefly."})
    assert run.status == "succeeded"
    tenant_connection().set_schema_to_public()
    response = Client().get("/metrics", HTTP_HOST="localhost")
    assert response.status_code == 200
    return exposition_parse(response.content.decode())


@pytest.fixture
def exported_metrics(
    two_tenants: tuple[Organization, Organization],
    fake_provider: FakeProvider,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> Exported:
    return app_exercise(two_tenants[0], django_capture_on_commit_callbacks)


# Names no process of ours exports: Prometheus's own per-target `up`, and the blackbox exporter's
# certificate probe (docs/metrics.md, "Where the metrics come from").
EXTERNAL_SERIES = frozenset({"up", "probe_ssl_earliest_cert_expiry"})
_NOT_METRICS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
    }
)


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (no parser: strings, label matchers, ranges and
    grouping clauses removed, then every identifier that is not a function call or keyword)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names: set[str] = set()
    for match in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        token = match.group(0)
        if text[match.end() :].lstrip().startswith("(") or token.lower() in _NOT_METRICS:
            continue
        names.add(token)
    return names


def recording_rule_names(rules_dir: Path) -> set[str]:
    names: set[str] = set()
    for path in sorted(rules_dir.glob("*.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.update(rule["record"] for rule in group["rules"] if "record" in rule)
    return names
