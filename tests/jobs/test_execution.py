"""Running jobs in-process against the fake provider: results commit with their ledger rows, the
reaper recovers jobs whose worker died, admission caps each organization."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.principals import Principal
from apps.billing.selectors import plan_limit
from apps.jobs.models import Job, JobStatus
from apps.jobs.services import JOB, job_cancel, job_execute, job_submit
from apps.llm.budgets import Spender, attempt_reserve
from apps.llm.models import AttemptStatus, UsageAttempt
from apps.llm.services import budget_set
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from apps.work.heartbeat import Heartbeats, _touch
from apps.work.services import work_claim, work_content_sweep, work_reap
from tests.factories import TEST_ACTOR
from tests.support.fake_provider import FakeProvider

KEY = Principal(kind="api_key", id="7", label="tests (cos_x)")
HELLO = {"messages": [{"role": "user", "content": "Say hello"}], "model": "gpt-4o-mini", "max_tokens": 50}


def _submit(organization: Organization, request: dict[str, object] | None = None) -> Job:
    return job_submit(organization=organization, principal=KEY, request=dict(request or HELLO))


def test_a_job_runs_once_and_its_answer_commits_with_its_ledger_row(
    tenant: Organization, fake_provider: FakeProvider
) -> None:
    job = _submit(tenant)
    job_execute(organization=tenant, job_id=job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert job.result is not None and job.result["text"]
    assert job.result["model"] == "gpt-4o-mini" and job.result["cache"] == "miss"
    assert job.result["usage"]["completion_tokens"] > 0
    attempt = UsageAttempt.objects.get(request_id=f"job-{job.pk.hex}-1")
    assert attempt.status == AttemptStatus.SUCCEEDED
    assert attempt.cost_usd == job.cost_usd > 0
    assert attempt.principal_kind == "api_key" and attempt.api_key_id == 7
    # A second delivery of the same task finds the job finished: no second call, no second row.
    job_execute(organization=tenant, job_id=job.pk)
    assert len(fake_provider.calls) == 1
    assert UsageAttempt.objects.filter(request_id__startswith=f"job-{job.pk.hex}").count() == 1


def test_a_job_answered_from_the_cache_succeeds_at_no_cost(tenant: Organization, fake_provider: FakeProvider) -> None:
    first, second = _submit(tenant), _submit(tenant)
    job_execute(organization=tenant, job_id=first.pk)
    job_execute(organization=tenant, job_id=second.pk)
    second.refresh_from_db()
    assert second.status == JobStatus.SUCCEEDED
    assert second.result is not None and second.result["cache"] in ("l1", "l2", "l4")
    assert second.cost_usd == 0
    assert len(fake_provider.calls) == 1


def test_a_job_refused_by_its_budget_fails_with_the_refusal(tenant: Organization, fake_provider: FakeProvider) -> None:
    budget_set(organization=tenant, scope="organization", period="day", limit_usd=Decimal("0.000001"), actor=TEST_ACTOR)
    job = _submit(tenant)
    job_execute(organization=tenant, job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.error_class) == (JobStatus.FAILED, "budget_exceeded")
    assert "budget" in job.error_message
    assert fake_provider.calls == []


def test_a_job_for_a_provider_without_credentials_fails_with_that_reason_not_an_internal_error(
    tenant: Organization, fake_provider: FakeProvider, settings: Any
) -> None:
    # As under `make run` without provider keys (with one of them set, the plan's fallback on the
    # other provider answers instead).
    settings.OPENAI_API_KEY = ""
    settings.ANTHROPIC_API_KEY = ""
    job = _submit(tenant)
    job_execute(organization=tenant, job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.error_class) == (JobStatus.FAILED, "provider_not_configured")
    assert "no credentials configured for openai" in job.error_message
    assert fake_provider.calls == []


def test_the_reaper_requeues_a_job_whose_worker_died_and_settles_the_dead_runs_attempt(
    tenant: Organization, fake_provider: FakeProvider
) -> None:
    job = _submit(tenant)
    started = work_claim(organization=tenant, kind=JOB, item_id=job.pk)
    assert started is not None and started.attempts == 1
    dead_attempt = attempt_reserve(
        spender=Spender(organization=tenant, principal=KEY),
        request_id=f"job-{job.pk.hex}-1",
        attempt=1,
        model_name="gpt-4o-mini",
        provider="openai",
        amount_usd=Decimal("0.01"),
        max_cost_usd=None,
    )
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - dt.timedelta(minutes=10))

    assert work_reap(organization=tenant, kind=JOB) == {"requeued": 1, "failed": 0, "resent": 0}
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED
    job_execute(organization=tenant, job_id=job.pk)

    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 2)
    dead_attempt.refresh_from_db()
    assert (dead_attempt.status, dead_attempt.cost_usd) == (AttemptStatus.SWEPT, Decimal("0.01"))
    assert UsageAttempt.objects.get(request_id=f"job-{job.pk.hex}-2").status == AttemptStatus.SUCCEEDED
    assert len(fake_provider.calls) == 1


def test_a_job_whose_worker_keeps_dying_fails_instead_of_running_forever(
    tenant: Organization, settings: pytest.FixtureRequest
) -> None:
    job = _submit(tenant)
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING,
        attempts=3,
        started_at=timezone.now() - dt.timedelta(minutes=20),
        heartbeat_at=timezone.now() - dt.timedelta(minutes=10),
    )
    assert work_reap(organization=tenant, kind=JOB)["failed"] == 1
    job.refresh_from_db()
    assert (job.status, job.error_class) == (JobStatus.FAILED, "WorkerLost")


def test_a_live_workers_job_is_not_taken_by_a_redelivered_message(tenant: Organization) -> None:
    job = _submit(tenant)
    assert work_claim(organization=tenant, kind=JOB, item_id=job.pk) is not None
    assert work_claim(organization=tenant, kind=JOB, item_id=job.pk) is None
    assert Job.objects.get(pk=job.pk).attempts == 1


def test_admission_caps_each_organization_on_its_own(two_tenants: tuple[Organization, Organization]) -> None:
    organization_a, organization_b = two_tenants
    cap = plan_limit(organization_a, "concurrent_jobs")
    with organization_schema(organization_a):
        jobs_a = [_submit(organization_a) for _ in range(cap + 3)]
        admitted_a = Job.objects.filter(admitted_at__isnull=False).count()
    with organization_schema(organization_b):
        _submit(organization_b)
        admitted_b = Job.objects.filter(admitted_at__isnull=False).count()
    assert (admitted_a, admitted_b) == (cap, 1)
    with organization_schema(organization_a):
        first = Job.objects.get(pk=jobs_a[0].pk)
        job_cancel(organization=organization_a, actor=TEST_ACTOR, job=first)
        waiting = Job.objects.filter(admitted_at__isnull=True).order_by("created_at")
        assert Job.objects.filter(admitted_at__isnull=False, status=JobStatus.QUEUED).count() == cap
        assert waiting.count() == 2
        assert Job.objects.get(pk=jobs_a[cap].pk).admitted_at is not None  # the oldest waiting one went next


def test_cancelling_a_running_job_keeps_it_cancelled_and_records_what_the_call_cost(
    tenant: Organization, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.jobs import services

    job = _submit(tenant)
    real_complete = services.chat_complete  # type: ignore[attr-defined]

    def cancel_during_call(**kwargs: object) -> object:
        job_cancel(organization=tenant, actor=TEST_ACTOR, job=Job.objects.get(pk=job.pk))
        return real_complete(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(services, "chat_complete", cancel_during_call)
    job_execute(organization=tenant, job_id=job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.result is None
    assert job.cost_usd == UsageAttempt.objects.get(request_id=f"job-{job.pk.hex}-1").cost_usd > 0


def test_heartbeats_touch_only_the_running_jobs_of_this_process(tenant: Organization) -> None:
    mine, other = _submit(tenant), _submit(tenant)
    old = timezone.now() - dt.timedelta(minutes=5)
    Job.objects.filter(pk__in=[mine.pk, other.pk]).update(
        status=JobStatus.RUNNING, attempts=1, started_at=old, heartbeat_at=old
    )
    beats = Heartbeats(touch=_touch, name="test-heartbeats")
    with beats.running(tenant.schema_name, (JOB.name, mine.pk)):
        assert beats.beat() == 1
    assert Job.objects.get(pk=mine.pk).heartbeat_at > old  # type: ignore[operator]
    assert Job.objects.get(pk=other.pk).heartbeat_at == old


def test_an_internal_error_fails_the_job_at_once_with_its_class(
    tenant: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.jobs import services

    def broken(**kwargs: object) -> object:
        raise KeyError("bug")

    monkeypatch.setattr(services, "chat_complete", broken)
    job = _submit(tenant)
    job_execute(organization=tenant, job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.error_class) == (JobStatus.FAILED, "KeyError")
    assert "bug" not in job.error_message  # internals stay in the log


def test_an_organization_that_stores_no_content_keeps_only_counts_and_costs_of_its_jobs(
    two_tenants: tuple[Organization, Organization], fake_provider: FakeProvider
) -> None:
    from apps.llm.selectors import llm_settings_forget
    from apps.llm.services import llm_settings_set

    organization_a, organization_b = two_tenants
    llm_settings_set(organization=organization_a, actor=TEST_ACTOR, store_content=False)
    llm_settings_forget()
    jobs = {}
    for organization in two_tenants:
        with organization_schema(organization):
            job = _submit(organization)
            job_execute(organization=organization, job_id=job.pk)
            job.refresh_from_db()
            jobs[organization.slug] = job
    private, kept = jobs[organization_a.slug], jobs[organization_b.slug]
    assert private.status == JobStatus.SUCCEEDED and private.content_removed
    assert private.request["messages"] is None and private.result is not None and private.result["text"] is None
    assert private.result["usage"]["total_tokens"] > 0 and private.cost_usd > 0
    assert "Say hello" not in str(private.request) + str(private.result)
    assert not kept.content_removed and kept.result is not None and kept.result["text"]


def test_job_content_is_removed_after_the_retention(tenant: Organization, fake_provider: FakeProvider) -> None:
    old, recent = _submit(tenant), _submit(tenant, {**HELLO, "max_tokens": 10})
    for job in (old, recent):
        job_execute(organization=tenant, job_id=job.pk)
    Job.objects.filter(pk=old.pk).update(finished_at=timezone.now() - dt.timedelta(days=31))
    assert work_content_sweep(organization=tenant, kind=JOB) == 1
    old.refresh_from_db()
    recent.refresh_from_db()
    assert old.content_removed and old.result is not None and old.result["text"] is None
    assert old.result["cost_usd"] and old.cost_usd > 0
    assert not recent.content_removed and recent.result is not None and recent.result["text"]


def test_a_provider_outage_sends_the_job_back_to_the_queue_until_its_runs_are_spent(
    tenant: Organization, fake_provider: FakeProvider
) -> None:
    fake_provider.fail_next(1000, status=503)  # every provider the router may fall back to is down
    job = _submit(tenant)
    job_execute(organization=tenant, job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error_class) == (JobStatus.QUEUED, 1, "provider_unavailable")
    assert job.admitted_at is not None and job.finished_at is None
    for _ in range(2):
        job_execute(organization=tenant, job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error_class) == (JobStatus.FAILED, 3, "provider_unavailable")
    failed_attempts = UsageAttempt.objects.filter(request_id__startswith=f"job-{job.pk.hex}-")
    assert failed_attempts.count() == len(fake_provider.calls) and failed_attempts.exclude(status="failed").count() == 0


def test_a_database_outage_leaves_the_job_to_the_reaper_instead_of_failing_it(
    tenant: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import OperationalError

    from apps.jobs import services

    def unreachable(**kwargs: object) -> object:
        raise OperationalError("couldn't get a connection after 10.00 sec")

    monkeypatch.setattr(services, "chat_complete", unreachable)
    job = _submit(tenant)
    with pytest.raises(OperationalError):
        job_execute(organization=tenant, job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error_class) == (JobStatus.RUNNING, 1, "")


def test_an_agent_with_knowledge_bases_answers_from_their_best_chunks_and_the_job_pays_the_searches(
    two_tenants: tuple[Organization, Organization], fake_provider: FakeProvider
) -> None:
    from apps.agents.models import Agent
    from tests.knowledge.factories import chunk_make, document_make, knowledge_base_make, simulated_embedding

    organization_a, organization_b = two_tenants
    texts = ["Refunds are paid within 14 days.", "Support answers on weekdays.", "Shipping is free over $50."]
    with organization_schema(organization_a):
        policies = knowledge_base_make(name="Policies", dimensions=256)
        document = document_make(policies, title="Policies")
        for ordinal, text in enumerate(texts[:2]):
            chunk_make(document, ordinal=ordinal, text=text, vector=simulated_embedding(text, 256))
        shipping = knowledge_base_make(name="Shipping", dimensions=256)
        chunk_make(
            document_make(shipping, title="Shipping"),
            ordinal=0,
            text=texts[2],
            vector=simulated_embedding(texts[2], 256),
        )
        knowledge_base_make(name="Unused", dimensions=256)
        agent = Agent.objects.create(name="support", model="gpt-4o-mini", retrieval_top_k=1)
        agent.knowledge_bases.set([policies, shipping])
        job = job_submit(
            organization=organization_a, principal=KEY, request={"prompt": texts[0], "max_tokens": 20}, agent=agent
        )
        job_execute(organization=organization_a, job_id=job.pk)
        job.refresh_from_db()
        searches = list(UsageAttempt.objects.filter(request_id__startswith=f"job-{job.pk.hex}-1.rag"))
        answer = UsageAttempt.objects.get(request_id=f"job-{job.pk.hex}-1")
    assert job.status == JobStatus.SUCCEEDED
    # One search per knowledge base of the agent, in the ledger as retrieval; the best chunk of both.
    assert len(searches) == 2 and {row.source for row in searches} == {"retrieval"}
    context = fake_provider.calls[-1].body["messages"][0]["content"]
    assert "[Policies #0] Refunds are paid within 14 days." in context
    assert texts[1] not in context and texts[2] not in context
    assert job.cost_usd == sum(row.cost_usd for row in searches) + answer.cost_usd and searches[0].cost_usd > 0
    # Organization B's agent of the same name sees none of A's knowledge.
    with organization_schema(organization_b):
        other = Agent.objects.create(name="support", model="gpt-4o-mini")
        job_b = job_submit(
            organization=organization_b, principal=KEY, request={"prompt": texts[0], "max_tokens": 20}, agent=other
        )
        job_execute(organization=organization_b, job_id=job_b.pk)
        assert not UsageAttempt.objects.filter(request_id__startswith=f"job-{job_b.pk.hex}-1.rag").exists()
    assert "Refunds" not in str(fake_provider.calls[-1].body["messages"][:-1])


def test_a_redis_stall_sends_the_job_back_to_the_queue(tenant: Organization, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    from apps.jobs import services

    def stalled(**kwargs: object) -> object:
        raise redis.TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(services, "chat_complete", stalled)
    job = _submit(tenant)
    job_execute(organization=tenant, job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error_class) == (JobStatus.QUEUED, 1, "TimeoutError")


def test_the_rate_limiter_fails_closed_on_redis_py_errors_that_are_not_redis_errors(
    tenant: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.llm import ratelimits

    def broken_script(**_: object) -> list[int]:
        raise ValueError("I/O operation on closed file.")

    monkeypatch.setattr(ratelimits, "_take_script", lambda: broken_script)
    with pytest.raises(ratelimits.RateLimitUnavailable, match="ValueError"):
        ratelimits.rate_limit_take(organization=tenant, api_key_id=1, tokens=10)
