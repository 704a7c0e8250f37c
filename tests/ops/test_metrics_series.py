"""The platform's own series: work and workflow-run outcomes, webhook attempts, swept budget holds,
and the scrape-time collectors (queues from the broker, organizations, dependencies)."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

from apps.accounts.principals import Principal
from apps.billing.models import Plan
from apps.jobs.services import job_execute, job_submit
from apps.llm import metrics as llm_metrics
from apps.llm.budgets import Spender, attempt_reserve, holds_sweep
from apps.llm.models import UsageAttempt
from apps.llm.services import budget_set
from apps.ops import collectors
from apps.ops.collectors import collector_register
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.webhooks.models import WebhookDelivery
from apps.webhooks.services import webhook_delivery_attempt, webhook_endpoint_create, webhook_event_emit
from cognitionos.celery import app as celery_app
from tests.factories import TEST_ACTOR
from tests.ops.metrics_exercise import _fresh_llm_state
from tests.support.fake_provider import FakeProvider
from tests.webhooks.receiver import http_receiver
from tests.workflows.factories import run_through, workflow_make

__all__ = ["_fresh_llm_state"]

KEY = Principal(kind="api_key", id="7", label="tests (cos_x)")
HELLO = {"messages": [{"role": "user", "content": "Count me"}], "model": "gpt-4o-mini", "max_tokens": 20}
OnCommit = Callable[..., Any]


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _scrape_values() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    tenant_connection().set_schema_to_public()
    text = Client().get("/metrics", HTTP_HOST="localhost").content.decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_job_is_counted_once_with_its_duration_wait_and_cost_after_commit(
    tenant: Organization, fake_provider: FakeProvider, django_capture_on_commit_callbacks: OnCommit
) -> None:
    done = {"kind": "job", "outcome": "succeeded"}
    before = _value("cognitionos_work_finished_total", **done)
    durations = _value("cognitionos_work_duration_seconds_count", **done)
    costs = _value("cognitionos_work_cost_usd_count", kind="job")
    cost_sum = _value("cognitionos_work_cost_usd_sum", kind="job")
    waits = _value("cognitionos_work_queue_wait_seconds_count", kind="job")
    job = job_submit(organization=tenant, principal=KEY, request=dict(HELLO))
    with django_capture_on_commit_callbacks(execute=False) as pending:
        job_execute(organization=tenant, job_id=job.pk)
    assert _value("cognitionos_work_finished_total", **done) == before  # not before the commit
    for callback in pending:
        callback()
    job.refresh_from_db()
    assert _value("cognitionos_work_finished_total", **done) == before + 1
    assert _value("cognitionos_work_duration_seconds_count", **done) == durations + 1
    assert _value("cognitionos_work_queue_wait_seconds_count", kind="job") == waits + 1
    assert _value("cognitionos_work_cost_usd_count", kind="job") == costs + 1
    assert _value("cognitionos_work_cost_usd_sum", kind="job") == pytest.approx(cost_sum + float(job.cost_usd))
    assert job.cost_usd > 0
    # Delivered again, the job is not run or counted again.
    with django_capture_on_commit_callbacks(execute=True):
        job_execute(organization=tenant, job_id=job.pk)
    assert _value("cognitionos_work_finished_total", **done) == before + 1


def test_a_job_refused_by_its_budget_counts_as_failed(
    tenant: Organization, fake_provider: FakeProvider, django_capture_on_commit_callbacks: OnCommit
) -> None:
    budget_set(organization=tenant, scope="organization", period="day", limit_usd=Decimal("0.000001"), actor=TEST_ACTOR)
    before = _value("cognitionos_work_finished_total", kind="job", outcome="failed")
    job = job_submit(organization=tenant, principal=KEY, request=dict(HELLO))
    with django_capture_on_commit_callbacks(execute=True):
        job_execute(organization=tenant, job_id=job.pk)
    assert _value("cognitionos_work_finished_total", kind="job", outcome="failed") == before + 1


def test_an_end_rolled_back_is_not_counted(tenant: Organization, fake_provider: FakeProvider) -> None:
    before = _value("cognitionos_work_finished_total", kind="job", outcome="succeeded")
    job = job_submit(organization=tenant, principal=KEY, request=dict(HELLO))
    with transaction.atomic():
        sid = transaction.savepoint()
        job_execute(organization=tenant, job_id=job.pk)
        transaction.savepoint_rollback(sid)
    assert _value("cognitionos_work_finished_total", kind="job", outcome="succeeded") == before


def test_a_workflow_run_and_its_steps_are_counted(
    tenant: Organization, django_capture_on_commit_callbacks: OnCommit
) -> None:
    runs = _value("cognitionos_workflow_runs_finished_total", outcome="succeeded")
    run_durations = _value("cognitionos_workflow_run_duration_seconds_count", outcome="succeeded")
    steps = _value("cognitionos_work_finished_total", kind="workflow_step", outcome="succeeded")
    with django_capture_on_commit_callbacks(execute=True):
        run = run_through(tenant, workflow_make(tenant), {"text": "Two steps to count."})
    assert run.status == "succeeded"
    assert _value("cognitionos_workflow_runs_finished_total", outcome="succeeded") == runs + 1
    assert _value("cognitionos_workflow_run_duration_seconds_count", outcome="succeeded") == run_durations + 1
    assert _value("cognitionos_work_finished_total", kind="workflow_step", outcome="succeeded") == steps + 2


def test_webhook_attempts_are_counted_by_outcome_and_deliveries_by_their_end(
    tenant: Organization, django_capture_on_commit_callbacks: OnCommit, settings: Any
) -> None:
    settings.WEBHOOK_RETRY_DELAYS_SECONDS = [0]
    http_5xx, success = (
        _value("cognitionos_webhook_attempts_total", outcome="http_5xx"),
        _value("cognitionos_webhook_attempts_total", outcome="success"),
    )
    retries = _value("cognitionos_work_retries_total", kind="webhook_delivery")
    delivered = _value("cognitionos_work_finished_total", kind="webhook_delivery", outcome="succeeded")
    with http_receiver(statuses=[502, 200]) as receiver:
        _, receiver.secret = webhook_endpoint_create(
            organization=tenant, actor=TEST_ACTOR, url=receiver.url, events=["job.*"]
        )
        [delivery] = webhook_event_emit(organization=tenant, event_type="job.succeeded", payload={"job": {}})
        with django_capture_on_commit_callbacks(execute=True):
            assert webhook_delivery_attempt(organization=tenant, delivery_id=delivery.pk) == "retrying"
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now() - dt.timedelta(seconds=1))
        with django_capture_on_commit_callbacks(execute=True):
            assert webhook_delivery_attempt(organization=tenant, delivery_id=delivery.pk) == "succeeded"
    assert _value("cognitionos_webhook_attempts_total", outcome="http_5xx") == http_5xx + 1
    assert _value("cognitionos_webhook_attempts_total", outcome="success") == success + 1
    assert _value("cognitionos_work_retries_total", kind="webhook_delivery") == retries + 1
    assert _value("cognitionos_work_finished_total", kind="webhook_delivery", outcome="succeeded") == delivered + 1


def test_a_swept_hold_is_counted_and_leaves_the_open_holds_of_live_processes_alone(tenant: Organization) -> None:
    budget_set(
        organization=tenant, scope="organization", period="day", limit_usd=Decimal(1), hard=True, actor=TEST_ACTOR
    )
    spender = Spender(organization=tenant, principal=KEY)
    swept = _value("cognitionos_llm_budget_holds_swept_total")
    opened = _value("cognitionos_llm_budget_holds_open")
    attempt = attempt_reserve(
        spender=spender,
        request_id=f"died-{uuid.uuid4().hex}",
        attempt=1,
        model_name="gpt-4o-mini",
        provider="openai",
        amount_usd=Decimal("0.01"),
        max_cost_usd=None,
    )
    assert _value("cognitionos_llm_budget_holds_open") == opened + 1
    # The hold outlived its process: the sweeper's process never counted it as its own.
    llm_metrics.OPEN_HOLDS.dec()
    UsageAttempt.objects.filter(pk=attempt.pk).update(hold_expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert holds_sweep(organization=tenant) == 1
    assert _value("cognitionos_llm_budget_holds_swept_total") == swept + 1
    assert _value("cognitionos_llm_budget_holds_open") == opened  # not decremented below what it counts


@pytest.fixture
def probe_queue(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A queue of this test's own, declared through a route (so the collector looks at it)."""
    name = f"metrics-probe-{uuid.uuid4().hex[:8]}"
    monkeypatch.setitem(celery_app.conf, "task_routes", {"metrics.probe": {"queue": name}})
    yield name
    # A connection of its own, not one of the pool's: a pooled one idle since an earlier test may
    # fail its health check, and redis-py then raises AttributeError on a Unix socket.
    with celery_app.connection_for_write() as conn:
        conn.default_channel.client.delete(name)  # type: ignore[attr-defined]


def test_queue_depth_and_age_are_read_from_the_broker(db: None, probe_queue: str) -> None:
    values = _scrape_values()
    assert values[("cognitionos_queue_depth", (("queue", probe_queue),))] == 0
    assert values[("cognitionos_queue_oldest_age_seconds", (("queue", probe_queue),))] == 0
    assert ("cognitionos_queue_unacked_messages", ()) in values
    for _ in range(3):
        celery_app.send_task("metrics.probe", queue=probe_queue)
    time.sleep(1.2)
    values = _scrape_values()
    assert values[("cognitionos_queue_depth", (("queue", probe_queue),))] == 3
    age = values[("cognitionos_queue_oldest_age_seconds", (("queue", probe_queue),))]
    assert 1.0 <= age < 30
    assert values[("cognitionos_scrape_collector_success", (("collector", "queues"),))] == 1


def test_organizations_are_counted_by_plan_and_status_without_naming_any(
    two_tenants: tuple[Organization, Organization],
) -> None:
    tenant_a, tenant_b = two_tenants

    def count(plan: str, status: str) -> float:
        return _scrape_values().get(("cognitionos_organizations", (("plan", plan), ("status", status))), 0.0)

    custom_active = count("custom", "active")  # the suite's plan is not a public one
    assert custom_active >= 2
    Organization.objects.filter(pk=tenant_b.pk).update(status=Organization.Status.SUSPENDED)
    Plan.objects.filter(pk=tenant_a.plan_id).update(public=True)
    plan_code = Plan.objects.get(pk=tenant_a.plan_id).code
    assert count(plan_code, "suspended") >= 1
    assert count(plan_code, "active") >= 1
    text = Client().get("/metrics", HTTP_HOST="localhost").content.decode()
    assert tenant_a.slug not in text and tenant_a.schema_name not in text


def test_dependencies_answer_and_a_failing_collector_leaves_the_others(db: None) -> None:
    def boom() -> Iterable[Metric]:
        raise RuntimeError("the source is down")

    collector_register("metrics-test-boom")(boom)
    try:
        values = _scrape_values()
    finally:
        collectors._collectors.pop("metrics-test-boom")
    for dependency in ("database", "redis", "broker"):
        assert values[("cognitionos_dependency_up", (("dependency", dependency),))] == 1
    assert values[("cognitionos_scrape_collector_success", (("collector", "metrics-test-boom"),))] == 0
    assert values[("cognitionos_scrape_collector_success", (("collector", "organizations"),))] == 1


def test_in_multiprocess_mode_scrape_time_series_appear_once_and_are_not_written_to_files(
    db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    response = Client().get("/metrics", HTTP_HOST="localhost")
    text = response.content.decode()
    for family in ("cognitionos_queue_depth", "cognitionos_organizations", "cognitionos_dependency_up"):
        assert text.count(f"# TYPE {family} gauge") == 1
    assert not any("cognitionos_organizations" in path.read_bytes().decode("latin-1") for path in tmp_path.iterdir())


def test_the_worker_exporter_serves_this_processs_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.request

    from apps.ops.celery_metrics import TASKS, worker_exporter_start

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    TASKS.labels("metrics.exporter_probe", "SUCCESS").inc()
    server = worker_exporter_start(0)
    assert server is not None
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'cognitionos_celery_tasks_total{state="SUCCESS",task="metrics.exporter_probe"}' in text
    assert "cognitionos_queue_depth" not in text  # the scrape-time series are the web pods'
