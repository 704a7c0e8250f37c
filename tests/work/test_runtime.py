"""The durable-work runtime, on jobs (its first kind): numbered claims, the one retry policy, the
reaper, content retention and the per-tenant fan-out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import kombu.exceptions
import pytest
import redis
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.principals import Principal
from apps.jobs.models import Job, JobStatus
from apps.jobs.services import JOB, job_execute, job_submit
from apps.llm.calls import LlmRefusal
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from apps.tenants.services import organization_status_set
from apps.work import policy, tasks
from apps.work.registry import work_kind, work_kinds, work_upkeep_register
from apps.work.services import WORK_RUN_TASK, work_claim, work_content_sweep, work_finish, work_reap
from cognitionos.celery import app as celery_app
from tests.factories import TEST_ACTOR
from tests.support.fake_provider import FakeProvider

KEY = Principal(kind="api_key", id="7", label="tests (cos_x)")
HELLO = {"messages": [{"role": "user", "content": "Say hello"}], "model": "gpt-4o-mini", "max_tokens": 20}


def _submit(organization: Organization) -> Job:
    return job_submit(organization=organization, principal=KEY, request=dict(HELLO))


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The run messages the runtime sends (to no worker)."""
    messages: list[dict[str, Any]] = []

    def send_task(name: str, kwargs: dict[str, Any], countdown: float | None = None) -> None:
        messages.append({"name": name, "countdown": countdown, **kwargs})

    monkeypatch.setattr(celery_app, "send_task", send_task)
    return messages


def test_jobs_register_as_a_kind_of_work_in_their_app_config() -> None:
    assert work_kind("job") is JOB and JOB in work_kinds()
    assert JOB.model is Job and [name for name, _ in JOB.content_fields] == ["request", "result"]
    with pytest.raises(LookupError):
        work_kind("nothing")


def test_a_run_that_lost_the_work_to_the_reaper_cannot_finish_it(tenant: Organization) -> None:
    job = _submit(tenant)
    first = work_claim(organization=tenant, kind=JOB, item_id=job.pk)
    assert first is not None and first.attempts == 1
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - dt.timedelta(minutes=10))
    assert work_reap(organization=tenant, kind=JOB)["requeued"] == 1
    job.refresh_from_db()
    assert (job.status, job.error_class) == (JobStatus.QUEUED, "WorkerLost")
    assert "worker stopped" in job.error_message
    second = work_claim(organization=tenant, kind=JOB, item_id=job.pk)
    assert second is not None and second.attempts == 2
    late = work_finish(
        organization=tenant,
        kind=JOB,
        item=first,
        status=JobStatus.SUCCEEDED,
        values={"result": {"text": "stale"}},
        attempt=first.attempts,
    )
    assert late is False
    job.refresh_from_db()
    assert (job.status, job.attempts, job.result) == (JobStatus.RUNNING, 2, None)


def test_the_database_refuses_a_running_row_without_a_heartbeat(tenant: Organization) -> None:
    job = _submit(tenant)
    with pytest.raises(IntegrityError), transaction.atomic():
        Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING)
    with pytest.raises(IntegrityError), transaction.atomic():
        Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, next_attempt_at=timezone.now())


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (LlmRefusal(503, "provider_unavailable", "down", retryable=True), ("provider_unavailable", True)),
        (LlmRefusal(429, "rate_limited", "slow down", retryable=True), ("rate_limited", True)),
        (LlmRefusal(402, "budget_exceeded", "over budget"), ("budget_exceeded", False)),
        (redis.ConnectionError("gone"), ("ConnectionError", True)),
        (kombu.exceptions.OperationalError("broker down"), ("OperationalError", True)),
        (TimeoutError("stalled"), ("TimeoutError", True)),
    ],
)
def test_the_retry_policy_retries_transient_refusals_and_outages_only(
    error: BaseException, expected: tuple[str, bool]
) -> None:
    failure = policy.failure_classify(error)
    assert failure is not None and (failure.error_class, failure.transient) == expected


def test_a_bug_is_not_classified_as_transient_and_backoff_is_jittered_and_bounded() -> None:
    assert policy.failure_classify(KeyError("bug")) is None
    delays = [policy.backoff_seconds(attempt) for attempt in (1, 2, 3, 10) for _ in range(50)]
    assert all(0 < delay <= policy.BACKOFF_MAX_SECONDS for delay in delays)
    assert len({round(delay, 6) for delay in delays[:50]}) > 1  # jittered
    assert max(delays[-50:]) > policy.backoff_seconds(1)  # grows with the attempt


def test_a_transient_refusal_requeues_with_a_countdown_and_the_next_attempt_time(
    tenant: Organization,
    fake_provider: FakeProvider,
    sent: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    fake_provider.fail_next(1000, status=503)
    job = _submit(tenant)
    with django_capture_on_commit_callbacks(execute=True):
        job_execute(organization=tenant, job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error_class) == (JobStatus.QUEUED, 1, "provider_unavailable")
    assert job.next_attempt_at is not None and job.next_attempt_at > timezone.now()
    [message] = [m for m in sent if m["countdown"] is not None]
    assert message["name"] == WORK_RUN_TASK
    assert (message["kind"], message["item_id"], message["tenant_id"]) == ("job", str(job.pk), tenant.pk)
    assert 0 < message["countdown"] <= policy.BACKOFF_MAX_SECONDS


def test_the_reaper_of_one_organization_leaves_the_others_work_alone(
    two_tenants: tuple[Organization, Organization],
) -> None:
    jobs = {}
    for organization in two_tenants:
        with organization_schema(organization):
            job = _submit(organization)
            assert work_claim(organization=organization, kind=JOB, item_id=job.pk) is not None
            Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - dt.timedelta(minutes=10))
            jobs[organization.slug] = job
    organization_a, organization_b = two_tenants
    with organization_schema(organization_a):
        assert work_reap(organization=organization_a, kind=JOB)["requeued"] == 1
        assert Job.objects.get(pk=jobs[organization_a.slug].pk).status == JobStatus.QUEUED
    with organization_schema(organization_b):
        assert Job.objects.get(pk=jobs[organization_b.slug].pk).status == JobStatus.RUNNING


def test_one_fan_out_reaps_served_organizations_and_sweeps_suspended_ones_too(
    two_tenants: tuple[Organization, Organization], monkeypatch: pytest.MonkeyPatch
) -> None:
    organization_a, organization_b = two_tenants
    organization_status_set(organization=organization_b, status=Organization.Status.SUSPENDED, actor=TEST_ACTOR)
    sent: list[tuple[int, str]] = []
    monkeypatch.setattr(tasks.work_maintain, "delay", lambda *, tenant_id, duty: sent.append((tenant_id, duty)))
    tasks.work_maintain_all(duty="reap")
    tasks.work_maintain_all(duty="sweep")
    assert (organization_a.pk, "reap") in sent and (organization_b.pk, "reap") not in sent
    assert {(organization_a.pk, "sweep"), (organization_b.pk, "sweep")} <= set(sent)


def test_the_sweep_of_a_suspended_organization_removes_its_expired_job_content(
    two_tenants: tuple[Organization, Organization], fake_provider: FakeProvider
) -> None:
    organization_a, organization_b = two_tenants
    expired = {}
    for organization in two_tenants:
        with organization_schema(organization):
            job = _submit(organization)
            job_execute(organization=organization, job_id=job.pk)
            Job.objects.filter(pk=job.pk).update(finished_at=timezone.now() - dt.timedelta(days=31))
            expired[organization.slug] = job
    organization_status_set(organization=organization_a, status=Organization.Status.SUSPENDED, actor=TEST_ACTOR)
    swept = tasks.work_maintain(tenant_id=organization_a.pk, duty="sweep")
    assert swept["job"] == 1
    reaped = tasks.work_maintain(tenant_id=organization_a.pk, duty="reap")
    assert reaped == {}  # a suspended organization's work is not run
    with organization_schema(organization_a):
        job = Job.objects.get(pk=expired[organization_a.slug].pk)
        assert job.content_deleted_at is not None and job.result is not None and job.result["text"] is None
        assert job.request["messages"] is None and job.cost_usd > 0
    with organization_schema(organization_b):  # the other organization's content is its own business
        other = Job.objects.get(pk=expired[organization_b.slug].pk)
        assert other.content_deleted_at is None and other.result is not None and other.result["text"]
        assert work_content_sweep(organization=organization_b, kind=JOB) == 1


def test_one_fan_out_runs_the_upkeep_of_workflow_steps_and_webhook_deliveries_too(tenant: Organization) -> None:
    """Every kind (jobs, workflow steps, webhook deliveries) is reaped, swept and dispatched by the
    same per-tenant tasks, with no fan-out of its own, as is the upkeep of workflow runs (their
    admission at each reap, their content retention)."""
    reaped = tasks.work_maintain(tenant_id=tenant.pk, duty="reap")
    swept = tasks.work_maintain(tenant_id=tenant.pk, duty="sweep")
    dispatched = tasks.work_maintain(tenant_id=tenant.pk, duty="dispatch")
    every = {"job", "workflow_step", "webhook_delivery", "knowledge_document", "knowledge_embedding_set", "data_export"}
    assert set(reaped) == {*every, "workflow_runs"}
    assert reaped["job"] == {"requeued": 0, "failed": 0, "resent": 0}
    assert set(swept) == {*every, "workflow_runs", "data_exports"}  # exports' stored zips expire too
    assert dispatched["webhook_delivery"] == 0 and set(dispatched) == {kind.name for kind in work_kinds()}
    with pytest.raises(ValueError, match="no duty"):
        work_upkeep_register(duty="nothing", name="x", run=lambda **kwargs: None)
