"""Jobs on real Celery worker processes, against the fake provider over HTTP."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from typing import Any

import pytest
from django_tenants.utils import schema_context
from rest_framework.test import APIClient

from apps.accounts.principals import Principal
from apps.apikeys.services import apikey_create
from apps.jobs.models import Job, JobStatus
from apps.jobs.services import JOB, job_submit
from apps.llm.models import AttemptStatus, UsageAttempt
from apps.tenants.models import Organization
from apps.work.services import work_reap
from tests.conftest import LiveDb
from tests.factories import TEST_ACTOR, organization_make
from tests.support.fake_provider import FakeProvider
from tests.support.worker import celery_worker, worker_start, worker_stop

pytestmark = pytest.mark.integration

KEY = Principal(kind="api_key", id="1", label="reliability (cos_x)")


def _worker_env(provider: FakeProvider) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": "sk-test-platform",
        "OPENAI_BASE_URL": provider.openai_base_url,
        "JOB_HEARTBEAT_SECONDS": "1",
        "JOB_HEARTBEAT_TIMEOUT_SECONDS": "4",
        "LLM_HOLD_SECONDS": "600",
    }


def _wait_finished(organization: Organization, *, timeout_s: float, tick: Any = None) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while True:
        with schema_context(organization.schema_name):
            counts = Counter(Job.objects.values_list("status", flat=True))
        if counts[JobStatus.QUEUED] + counts[JobStatus.RUNNING] == 0 or time.monotonic() > deadline:
            return dict(counts)
        if tick is not None:
            tick()
        time.sleep(0.5)


def test_a_job_submitted_through_the_api_is_run_by_a_worker(live_db: LiveDb) -> None:
    organization = live_db.organization(slug="jobs-e2e")
    key = apikey_create(organization=organization, name="e2e", actor=TEST_ACTOR).key
    client = APIClient(HTTP_HOST="localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    with FakeProvider() as provider, celery_worker(env=_worker_env(provider)):
        submitted = client.post(
            "/api/v1/jobs", {"prompt": "Say hello", "model": "gpt-4o-mini", "max_tokens": 20}, format="json"
        )
        assert submitted.status_code == 202, submitted.content
        job_id = submitted.json()["id"]
        deadline = time.monotonic() + 30
        while (body := client.get(f"/api/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, body
            time.sleep(0.2)
        # The same question again is answered from the cache, on the worker's own connection.
        repeat = client.post(
            "/api/v1/jobs", {"prompt": "Say hello", "model": "gpt-4o-mini", "max_tokens": 20}, format="json"
        ).json()["id"]
        while (cached := client.get(f"/api/v1/jobs/{repeat}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline + 30, cached
            time.sleep(0.2)
        events = client.get(f"/api/v1/jobs/{job_id}/events")
        stream = b"".join(events.streaming_content).decode()  # type: ignore[attr-defined]
    assert body["status"] == "succeeded", body
    result = body["result"]
    assert result["text"] and result["model"] == "gpt-4o-mini" and result["cache"] == "miss"
    assert float(body["cost_usd"]) > 0 and result["usage"]["total_tokens"] > 0
    assert body["timings"]["run_ms"] is not None
    assert [call.request_id for call in provider.calls] == [f"job-{job_id.replace('-', '')}-1"]
    assert cached["status"] == "succeeded" and cached["result"]["cache"] != "miss", cached
    assert cached["result"]["text"] == result["text"] and float(cached["cost_usd"]) == 0
    assert stream.startswith("event: status\ndata: ") and '"status": "succeeded"' in stream


def test_jobs_survive_workers_killed_at_random_each_ends_once_and_the_ledger_matches_the_provider(
    live_db: LiveDb, settings: Any
) -> None:
    """A few hundred jobs; worker processes SIGKILLed while they run and restarted. Every job ends,
    once; every call the provider received has exactly one ledger row, and every row a call (but
    an attempt killed between its committed reservation and its request, settled as swept)."""
    organization = organization_make(slug="jobs-chaos", plan_code="enterprise")
    live_db.track(organization)
    settings.JOB_HEARTBEAT_TIMEOUT_SECONDS = 4
    settings.JOB_DISPATCH_RESEND_SECONDS = 6
    jobs_count, kills = 300, 4
    rng = random.Random(5)
    with FakeProvider(latency_s=1.0) as provider:
        env = _worker_env(provider)
        workers: dict[str, subprocess.Popen[bytes]] = {
            name: worker_start(concurrency=40, env=env, name=name) for name in ("w1", "w2")
        }
        try:
            with schema_context(organization.schema_name):
                for number in range(jobs_count):
                    job_submit(
                        organization=organization,
                        principal=KEY,
                        request={"prompt": f"job {number}", "model": "gpt-4o-mini", "max_tokens": 16},
                    )
            started = time.monotonic()
            for _ in range(kills):
                time.sleep(rng.uniform(0.3, 1.0))
                with schema_context(organization.schema_name):
                    unfinished = Job.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING])
                    waited_until = time.monotonic() + 10
                    while unfinished.exists() and not unfinished.filter(status=JobStatus.RUNNING).exists():
                        if time.monotonic() > waited_until:
                            break
                        work_reap(organization=organization, kind=JOB)  # a message lost with a killed worker
                        time.sleep(0.1)  # kill while calls are in flight
                name = rng.choice(sorted(workers))
                workers[name].send_signal(signal.SIGKILL)
                workers[name].wait()
                with schema_context(organization.schema_name):
                    work_reap(organization=organization, kind=JOB)
                workers[name] = worker_start(concurrency=40, env=env, name=name)

            def reap() -> None:
                with schema_context(organization.schema_name):
                    work_reap(organization=organization, kind=JOB)

            counts = _wait_finished(organization, timeout_s=120, tick=reap)
            elapsed = time.monotonic() - started
        finally:
            for process in workers.values():
                worker_stop(process)
        calls = [call for call in provider.calls if call.path.endswith("/chat/completions")]

    assert counts.get(JobStatus.SUCCEEDED, 0) + counts.get(JobStatus.FAILED, 0) == jobs_count, counts
    with schema_context(organization.schema_name):
        jobs = {job.pk.hex: job for job in Job.objects.all()}
        rows = list(UsageAttempt.objects.values_list("request_id", "attempt", "status", "cost_usd"))
    failed = [job for job in jobs.values() if job.status == JobStatus.FAILED]
    assert all(job.error_class == "WorkerLost" for job in failed), [(j.error_class, j.error_message) for j in failed]

    served = Counter((call.request_id, int(call.attempt or 0)) for call in calls)
    assert max(served.values()) == 1, "the provider received the same attempt twice"
    ledger = {(request_id, attempt): status for request_id, attempt, status, _ in rows}
    assert len(ledger) == len(rows)
    assert set(served) - set(ledger) == set(), "a call the provider served has no ledger row"
    without_call = {key: status for key, status in ledger.items() if key not in served}
    assert set(without_call.values()) <= {AttemptStatus.SWEPT}, without_call

    succeeded_rows = Counter(request_id.split("-")[1] for request_id, _, status, _ in rows if status == "succeeded")
    for job_hex, job in jobs.items():
        expected = 1 if job.status == JobStatus.SUCCEEDED else 0
        assert succeeded_rows.get(job_hex, 0) == expected, (job.status, job.attempts)
    recovered = sum(1 for job in jobs.values() if job.attempts > 1)
    assert recovered > 0, "no kill landed on a running job: the test proved nothing"
    print(
        f"\nreliability: {jobs_count} jobs, {kills} SIGKILLs, ended in {elapsed:.1f} s; {dict(counts)}; "
        f"{recovered} jobs recovered after a kill; {len(calls)} provider calls; "
        f"{len(without_call)} swept rows without a call"
    )
