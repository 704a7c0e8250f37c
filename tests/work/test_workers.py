"""Jobs, workflow runs and webhook deliveries together on real worker processes that are SIGKILLed
while they work: nothing is lost, nothing is billed twice, and the ledger is the provider's log."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from django_tenants.utils import schema_context

from apps.accounts.principals import Principal
from apps.jobs.models import Job, JobStatus
from apps.jobs.services import JOB, job_submit
from apps.llm.models import AttemptStatus, UsageAttempt
from apps.tenants.models import Organization
from apps.webhooks.models import DeliveryStatus, WebhookDelivery
from apps.webhooks.services import DELIVERY, webhook_endpoint_create
from apps.work.services import work_dispatch, work_reap
from apps.workflows.definitions import workflow_create
from apps.workflows.executor import STEP
from apps.workflows.models import RunStatus, StepRun, WorkflowRun
from apps.workflows.runs import run_start
from tests.conftest import LiveDb
from tests.factories import TEST_ACTOR, organization_make
from tests.support.fake_provider import FakeProvider
from tests.support.worker import worker_start, worker_stop
from tests.webhooks.receiver import http_receiver

pytestmark = pytest.mark.integration

KEY = Principal(kind="api_key", id="1", label="reliability (cos_x)")
DEFINITION = {
    "steps": [
        {"name": "draft", "type": "llm", "model": "gpt-4o-mini", "max_tokens": 16, "prompt": "Draft {{ input.n }}"},
        {
            "name": "each",
            "type": "map",
            "items": "{{ input.items }}",
            "concurrency": 3,
            "step": {"type": "llm", "model": "gpt-4o-mini", "max_tokens": 16, "prompt": "{{ input.n }}: {{ item }}"},
        },
    ]
}


def _worker_env(provider: FakeProvider) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": "sk-test-platform",
        "OPENAI_BASE_URL": provider.openai_base_url,
        "JOB_HEARTBEAT_SECONDS": "1",
        "JOB_HEARTBEAT_TIMEOUT_SECONDS": "4",
        "LLM_HOLD_SECONDS": "600",
        # Every thread (and a map step's item threads) holds a connection: the heartbeat thread must
        # still get one, or live work looks dead and is taken over.
        "DATABASE_POOL_MAX_SIZE": "40",
        # A delivery whose worker died is taken again when its heartbeat is stale, like the rest.
        "WEBHOOK_TIMEOUT_SECONDS": "1",
        "WEBHOOK_RETRY_DELAYS_SECONDS": "1",
    }


def _unfinished(organization: Organization) -> dict[str, int]:
    with schema_context(organization.schema_name):
        return {
            "jobs": Job.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).count(),
            "runs": WorkflowRun.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).count(),
            "deliveries": WebhookDelivery.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).count(),
        }


def _upkeep(organization: Organization) -> None:
    """What the beat does, at test speed: reap jobs and steps, send due deliveries again."""
    with schema_context(organization.schema_name):
        work_reap(organization=organization, kind=JOB)
        work_reap(organization=organization, kind=STEP)
        work_reap(organization=organization, kind=DELIVERY)
        work_dispatch(organization=organization, kind=DELIVERY)


def test_jobs_runs_and_deliveries_survive_workers_killed_together_and_the_ledger_is_the_providers_log(
    live_db: LiveDb, settings: Any
) -> None:
    organization = organization_make(slug="work-chaos", plan_code="enterprise")
    live_db.track(organization)
    settings.JOB_HEARTBEAT_TIMEOUT_SECONDS = 4
    settings.JOB_DISPATCH_RESEND_SECONDS = 6
    jobs_count, runs_count, items, kills = 120, 12, 4, 4
    rng = random.Random(11)
    with FakeProvider(latency_s=0.8) as provider, http_receiver() as receiver:
        with schema_context(organization.schema_name):
            webhook_endpoint_create(
                organization=organization, actor=TEST_ACTOR, url=receiver.url, events=["job.*", "run.*"]
            )
        env = _worker_env(provider)
        workers: dict[str, subprocess.Popen[bytes]] = {
            name: worker_start(concurrency=20, env=env, name=name) for name in ("w1", "w2")
        }
        try:
            with schema_context(organization.schema_name):
                workflow = workflow_create(organization=organization, actor=KEY, name="chaos", definition=DEFINITION)
                for number in range(max(jobs_count, runs_count)):
                    if number < jobs_count:
                        job_submit(
                            organization=organization,
                            principal=KEY,
                            request={"prompt": f"job {number}", "model": "gpt-4o-mini", "max_tokens": 16},
                        )
                    if number < runs_count:
                        run_start(
                            organization=organization,
                            principal=KEY,
                            workflow=workflow.workflow,
                            input={"n": number, "items": [f"item {i}" for i in range(items)]},
                        )
            started = time.monotonic()
            for _ in range(kills):
                time.sleep(rng.uniform(0.5, 1.5))  # calls in flight (0.8 s each), deliveries going out
                name = rng.choice(sorted(workers))
                workers[name].send_signal(signal.SIGKILL)
                workers[name].wait()
                _upkeep(organization)
                workers[name] = worker_start(concurrency=20, env=env, name=name)
            deadline = time.monotonic() + 180
            while any(_unfinished(organization).values()) and time.monotonic() < deadline:
                _upkeep(organization)
                time.sleep(0.5)
            unfinished = _unfinished(organization)
            elapsed = time.monotonic() - started
        finally:
            for process in workers.values():
                worker_stop(process)
        calls = [call for call in provider.calls if call.path.endswith("/chat/completions")]
        received = list(receiver.received)

    assert unfinished == {"jobs": 0, "runs": 0, "deliveries": 0}, unfinished
    with schema_context(organization.schema_name):
        jobs = list(Job.objects.all())
        runs = list(WorkflowRun.objects.all())
        steps = list(StepRun.objects.all())
        deliveries = list(WebhookDelivery.objects.all())
        rows = list(UsageAttempt.objects.values_list("request_id", "attempt", "status", "cost_usd"))

    # Nothing lost: every job and run ended (failed only when its workers kept dying), and every
    # end reached the receiver at least once (deliveries are at least once; receivers deduplicate).
    assert len(jobs) == jobs_count and len(runs) == runs_count
    lost = [(job.status, job.error_class) for job in jobs if job.status != JobStatus.SUCCEEDED]
    lost += [(run.status, run.error_class) for run in runs if run.status != RunStatus.SUCCEEDED]
    assert all(error_class == "WorkerLost" for _, error_class in lost), lost
    assert len(deliveries) == jobs_count + runs_count
    assert all(delivery.status == DeliveryStatus.SUCCEEDED for delivery in deliveries)
    event_ids = {str(delivery.event_id) for delivery in deliveries}
    assert event_ids <= {json.loads(request.body)["id"] for request in received}

    # Nothing billed twice: the provider served each attempt of each request once, each served call
    # has one ledger row, and a row without a call is an attempt killed before it called (swept).
    served = Counter((call.request_id, int(call.attempt or 0)) for call in calls)
    assert max(served.values()) == 1, "the provider received the same attempt twice"
    ledger = {(request_id, attempt): status for request_id, attempt, status, _ in rows}
    assert len(ledger) == len(rows)
    assert set(served) <= set(ledger), "a call the provider served has no ledger row"
    # A row without a call: an attempt killed before it called (swept from its reservation), or
    # an answer from the cache (a run taken over after its first answer was cached), at no cost.
    without_call = {key: status for key, status in ledger.items() if key not in served}
    assert set(without_call.values()) <= {AttemptStatus.SWEPT, AttemptStatus.CACHE_HIT}, without_call
    assert all(cost == 0 for _, _, status, cost in rows if status == AttemptStatus.CACHE_HIT)

    # The ledger is what the work recorded: one succeeded row per succeeded job (its cost), and each
    # run's cost is the sum of its rows (swept ones included: a dead step's reservation is its cost).
    succeeded = {request_id: cost for request_id, _, status, cost in rows if status == AttemptStatus.SUCCEEDED}
    for job in jobs:
        mine = [cost for request_id, cost in succeeded.items() if request_id.startswith(f"job-{job.pk.hex}-")]
        assert len(mine) == (1 if job.status == JobStatus.SUCCEEDED else 0), (job.status, job.attempts)
        assert job.status != JobStatus.SUCCEEDED or job.cost_usd == mine[0]
    for run in runs:
        run_rows = [cost for request_id, _, _, cost in rows if request_id.startswith(f"wf-{run.pk.hex}-")]
        assert run.cost_usd == sum(run_rows, Decimal(0)), run.pk
    recovered = sum(1 for job in jobs if job.attempts > 1) + sum(1 for step in steps if step.attempts > 1)
    assert recovered > 0, "no kill landed on running work: the test proved nothing"
    print(
        f"\nwork chaos: {jobs_count} jobs, {runs_count} runs, {len(deliveries)} deliveries, {kills} SIGKILLs, "
        f"ended in {elapsed:.1f} s; {recovered} jobs/steps recovered; {len(calls)} provider calls; "
        f"{len(without_call)} swept rows without a call; {len(received)} webhook requests received"
    )
