"""One progress stream (apps.work.progress): a state change reaches an open stream through Redis
pub/sub long before the slow fallback read, a finished object ends the stream, one organization's
notices never wake another's stream, a Redis outage degrades to polling, and an open stream reads
the database a few times a minute instead of twice a second."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
import redis
from django.db import connection
from django.http import StreamingHttpResponse
from rest_framework.test import APIClient

from apps.accounts.principals import Principal
from apps.apikeys.services import apikey_create
from apps.jobs.api import JobOutput
from apps.jobs.models import Job, JobStatus
from apps.jobs.services import JOB, job_cancel, job_submit
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization
from apps.work import progress
from apps.work.services import work_claim, work_finish
from apps.workflows.executor import STEP
from apps.workflows.models import StepRun
from apps.workflows.runs import run_cancel, run_start
from tests.conftest import TENANT_A, ApiClientFor, LiveDb
from tests.factories import TEST_ACTOR
from tests.support.processes import free_port, web_serving
from tests.workflows.factories import run_through, workflow_make

KEY = Principal(kind="api_key", id="7", label="tests (cos_x)")
HELLO = {"messages": [{"role": "user", "content": "Say hello"}], "model": "gpt-4o-mini", "max_tokens": 20}
# Long enough that an event seen within a few seconds can only have come through pub/sub.
SLOW_FALLBACK_SECONDS = 30.0


class Reader:
    """Consumes a streaming response on its own thread (as a web server's thread would), with the
    time each chunk arrived and the database queries the stream made."""

    def __init__(self, response: StreamingHttpResponse) -> None:
        self.chunks: list[tuple[float, str]] = []
        self.queries = 0
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(response,), daemon=True)
        self._thread.start()

    def _read(self, response: StreamingHttpResponse) -> None:
        def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            self.queries += 1
            return execute(sql, params, many, context)

        try:
            with connection.execute_wrapper(count):
                for chunk in response.streaming_content:  # type: ignore[union-attr]
                    self.chunks.append((time.monotonic(), bytes(chunk).decode()))
        finally:
            response.close()
            connection.close()
            self.ended.set()

    def arrival(self, text: str, timeout: float = 15.0) -> float:
        """When the first chunk containing `text` arrived (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for arrived, chunk in list(self.chunks):
                if text in chunk:
                    return arrived
            time.sleep(0.005)
        raise AssertionError(f"no chunk with {text!r} within {timeout} s: {self.chunks}")

    def events(self) -> list[str]:
        return [chunk for _, chunk in self.chunks if chunk.startswith("event:")]

    def join(self, timeout: float) -> bool:
        return self.ended.wait(timeout)


def _job_stream(organization: Organization, job_id: uuid.UUID) -> StreamingHttpResponse:
    """The stream of the jobs API (apps.jobs.api.JobEventsApi) without the HTTP request around it."""

    def poll() -> tuple[list[tuple[str, str, Any]], bool] | None:
        job = Job.objects.filter(pk=job_id).first()
        return None if job is None else ([("job", "status", JobOutput(job).data)], job.is_finished)

    return progress.progress_stream(organization=organization, topic=JOB.name, object_id=job_id, poll=poll)


@pytest.fixture
def committed_jobs(live_db: LiveDb) -> Iterator[tuple[Organization, list[Job]]]:
    """Organization A (committed writes) and a list in which tests put the jobs they create there;
    those are removed at the end (the organization is shared with the rest of the suite)."""
    tenant_connection().set_schema_to_public()
    organization = Organization.objects.get(slug=TENANT_A)
    jobs: list[Job] = []
    yield organization, jobs
    with organization_schema(organization):
        Job.objects.filter(pk__in=[job.pk for job in jobs]).delete()


def _job(organization: Organization, jobs: list[Job]) -> Job:
    with organization_schema(organization):
        job = Job.objects.create(request=dict(HELLO))
    jobs.append(job)
    return job


def _claim_and_finish(organization: Organization, job: Job) -> bool:
    with organization_schema(organization):
        claimed = work_claim(organization=organization, kind=JOB, item_id=job.pk)
        assert claimed is not None
        return work_finish(
            organization=organization,
            kind=JOB,
            item=claimed,
            status=JobStatus.SUCCEEDED,
            values={"result": {"text": "hi"}},
            attempt=claimed.attempts,
        )


@pytest.mark.integration
def test_a_state_change_reaches_an_open_stream_long_before_the_fallback_read(
    committed_jobs: tuple[Organization, list[Job]], monkeypatch: pytest.MonkeyPatch
) -> None:
    organization, jobs = committed_jobs
    monkeypatch.setattr(progress, "EVENTS_FALLBACK_SECONDS", SLOW_FALLBACK_SECONDS)
    job = _job(organization, jobs)
    reader = Reader(_job_stream(organization, job.pk))
    reader.arrival('"status": "queued"')

    changed = time.monotonic()
    with organization_schema(organization):
        claimed = work_claim(organization=organization, kind=JOB, item_id=job.pk)
    assert claimed is not None
    claimed_latency = reader.arrival('"status": "running"') - changed

    changed = time.monotonic()
    with organization_schema(organization):
        assert work_finish(
            organization=organization,
            kind=JOB,
            item=claimed,
            status=JobStatus.SUCCEEDED,
            values={"result": {"text": "hi"}},
            attempt=claimed.attempts,
        )
    finished_latency = reader.arrival('"status": "succeeded"') - changed
    assert reader.join(5), "the stream did not end with its job"
    print(f"claim -> event {claimed_latency * 1000:.1f} ms, finish -> event {finished_latency * 1000:.1f} ms")
    assert claimed_latency < 3.0 and finished_latency < 3.0  # the fallback read would take 30 s
    assert [event.split("\n")[0] for event in reader.events()] == ["event: status"] * 3


@pytest.mark.integration
def test_through_the_web_server_a_change_made_in_another_process_reaches_the_stream_at_once(
    live_db: LiveDb,
) -> None:
    organization = live_db.organization(slug="progress-sse")
    tenant_connection().set_schema_to_public()
    key = apikey_create(organization=organization, name="progress", actor=TEST_ACTOR).key
    job = _job(organization, [])
    lines: list[tuple[float, str]] = []

    def read(base: str) -> None:
        url, headers = f"{base}/api/v1/jobs/{job.pk}/events", {"Authorization": f"Bearer {key}", "Host": "localhost"}
        with httpx2.Client(timeout=30) as client, client.stream("GET", url, headers=headers) as response:
            lines.append((time.monotonic(), f"{response.status_code} {response.headers['content-type']}"))
            lines.extend((time.monotonic(), line) for line in response.iter_lines())

    def arrival(text: str) -> float:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if found := [arrived for arrived, line in list(lines) if text in line]:
                return found[0]
            time.sleep(0.005)
        raise AssertionError(f"no {text!r} in {lines}")

    with web_serving(port=free_port(), env={"WEB_PROCESSES": "1", "WEB_THREADS": "4"}) as base:
        reader = threading.Thread(target=read, args=(base,), daemon=True)
        reader.start()
        opened = arrival('"status": "queued"')
        # One second after the stream's first read: its fallback read would come 4 s after the change.
        time.sleep(max(0.0, opened + 1 - time.monotonic()))
        changed = time.monotonic()
        with organization_schema(organization):  # this process stands for the worker
            claimed = work_claim(organization=organization, kind=JOB, item_id=job.pk)
        assert claimed is not None
        latency = arrival('"status": "running"') - changed
        with organization_schema(organization):
            work_finish(
                organization=organization,
                kind=JOB,
                item=claimed,
                status=JobStatus.SUCCEEDED,
                values={"result": {"text": "hi"}},
                attempt=claimed.attempts,
            )
        arrival('"status": "succeeded"')
        reader.join(10)
        assert not reader.is_alive(), "the stream did not end with its job"
    print(f"through the web server: claim in another process -> event {latency * 1000:.1f} ms")
    assert lines[0][1] == "200 text/event-stream"
    assert latency < 2.0


def test_a_finished_job_ends_its_stream_with_its_last_status(
    tenant: Organization, api_client_for: ApiClientFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    channels: list[str] = []
    subscribe = progress._Notices.__init__

    def spy(self: progress._Notices, channel: str) -> None:
        channels.append(channel)
        subscribe(self, channel)

    monkeypatch.setattr(progress._Notices, "__init__", spy)
    client: APIClient = api_client_for(tenant)
    tenant_connection().set_tenant(tenant)
    job = job_submit(organization=tenant, principal=KEY, request=dict(HELLO))
    job_cancel(organization=tenant, actor=KEY, job=job)
    started = time.monotonic()
    response = client.get(f"/api/v1/jobs/{job.pk}/events")
    body = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    assert time.monotonic() - started < 2.0
    assert response["Content-Type"] == "text/event-stream"
    assert body.count("event: status") == 1 and '"status": "cancelled"' in body
    # The view follows the channel the runtime announces a job's changes on.
    assert channels == [progress.progress_channel(organization=tenant, topic=JOB.name, object_id=job.pk)]


def test_a_workflow_steps_claim_and_its_runs_cancel_wake_the_runs_stream(
    tenant: Organization, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    published: list[str] = []
    monkeypatch.setattr(progress, "_publish", published.append)
    run = run_start(organization=tenant, principal=KEY, workflow=workflow_make(tenant), input={"text": "x"})
    step = StepRun.objects.get(run=run, name="summary")
    run_channel = progress.progress_channel(organization=tenant, topic="workflow_run", object_id=run.pk)
    with django_capture_on_commit_callbacks(execute=True):
        assert work_claim(organization=tenant, kind=STEP, item_id=step.pk) is not None
    assert published == [run_channel]  # the step's change wakes the run's stream, not a step channel
    published.clear()
    with django_capture_on_commit_callbacks(execute=True):
        run_cancel(organization=tenant, actor=KEY, run=run)
    assert set(published) == {run_channel}


def test_each_map_item_done_wakes_the_runs_stream(
    tenant: Organization, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    """A map step's followers see items_done move item by item: one notice per item recorded, on
    top of the step's own (two runs that differ only in their item count differ by that many)."""
    published: list[str] = []
    monkeypatch.setattr(progress, "_publish", published.append)
    definition = {
        "steps": [
            {
                "name": "each",
                "type": "map",
                "items": "{{ input.docs }}",
                "concurrency": 1,
                "step": {"type": "transform", "template": "{{ item }}"},
            }
        ]
    }

    def notices(items: int) -> int:
        with django_capture_on_commit_callbacks(execute=True):
            workflow = workflow_make(tenant, definition, name=f"map-{items}")
            run = run_through(tenant, workflow, {"docs": [f"d{i}" for i in range(items)]})
        assert run.status == "succeeded"
        channel = progress.progress_channel(organization=tenant, topic="workflow_run", object_id=run.pk)
        return published.count(channel)

    assert notices(4) - notices(1) == 3


def _counting_stream(
    organization: Organization, object_id: Any, stop: threading.Event
) -> tuple[StreamingHttpResponse, list[float]]:
    """A stream whose every read sends an event (so each wake-up shows) and that finishes once
    `stop` is set; the times of its reads."""
    reads: list[float] = []

    def poll() -> tuple[list[tuple[str, str, Any]], bool]:
        reads.append(time.monotonic())
        return [("read", "read", {"n": len(reads)})], stop.is_set()

    return progress.progress_stream(organization=organization, topic="job", object_id=object_id, poll=poll), reads


def _read_both(
    a: Organization, b: Organization, object_id: Any, stop: threading.Event
) -> tuple[tuple[Reader, list[float]], tuple[Reader, list[float]]]:
    """Counting streams of A and B on the same object id, each read once (subscribed) already."""
    readers = []
    for organization in (a, b):
        stream, reads = _counting_stream(organization, object_id, stop)
        reader = Reader(stream)
        reader.arrival('"n": 1')
        readers.append((reader, reads))
    return readers[0], readers[1]


def test_a_stream_never_wakes_for_another_organizations_notice_on_the_same_id(
    two_tenants: tuple[Organization, Organization],
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    a, b = two_tenants
    monkeypatch.setattr(progress, "EVENTS_FALLBACK_SECONDS", SLOW_FALLBACK_SECONDS)
    same_id = uuid.uuid4()
    assert progress.progress_channel(organization=a, topic="job", object_id=same_id) != progress.progress_channel(
        organization=b, topic="job", object_id=same_id
    )
    stop = threading.Event()
    (reader_a, reads_a), (reader_b, reads_b) = _read_both(a, b, same_id, stop)

    with django_capture_on_commit_callbacks(execute=True):
        progress.progress_publish(organization=b, topic="job", object_id=same_id)
    reader_b.arrival('"n": 2', timeout=3)
    time.sleep(1.0)  # ample time for a wrongly routed notice to arrive
    assert len(reads_a) == 1, "organization A's stream woke for B's notice"

    with django_capture_on_commit_callbacks(execute=True):
        progress.progress_publish(organization=a, topic="job", object_id=same_id)
    reader_a.arrival('"n": 2', timeout=3)
    assert len(reads_b) == 2

    stop.set()
    for organization in (a, b):
        with django_capture_on_commit_callbacks(execute=True):
            progress.progress_publish(organization=organization, topic="job", object_id=same_id)
    assert reader_a.join(5) and reader_b.join(5)


def test_batched_notices_wait_for_the_send_collapse_per_object_and_reach_only_their_organizations_stream(
    two_tenants: tuple[Organization, Organization],
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """As the workers send them (WORK_PROGRESS_NOTICE_SECONDS > 0): nothing before the batch goes,
    then one notice per object however often it changed, on each organization's own channel."""
    a, b = two_tenants
    monkeypatch.setattr(progress, "EVENTS_FALLBACK_SECONDS", SLOW_FALLBACK_SECONDS)
    settings.WORK_PROGRESS_NOTICE_SECONDS = 3600.0  # the batch's own thread never sends during the test
    progress.progress_notices_flush()
    same_id = uuid.uuid4()
    stop = threading.Event()
    (reader_a, reads_a), (reader_b, reads_b) = _read_both(a, b, same_id, stop)

    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(3):  # claimed, progressed, finished: three changes before the send
            progress.progress_publish(organization=b, topic="job", object_id=same_id)
    time.sleep(0.5)
    assert (len(reads_a), len(reads_b)) == (1, 1), "a notice went before its batch"

    assert progress.progress_notices_flush() == 1
    reader_b.arrival('"n": 2', timeout=3)
    time.sleep(0.5)  # time for a second notice, or one wrongly routed to A, to arrive
    assert (len(reads_a), len(reads_b)) == (1, 2)

    stop.set()
    for organization in (a, b):
        with django_capture_on_commit_callbacks(execute=True):
            progress.progress_publish(organization=organization, topic="job", object_id=same_id)
    assert progress.progress_notices_flush() == 2
    assert reader_a.join(5) and reader_b.join(5)


def _redis_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Redis call of the progress module fails (nothing listens on that port)."""
    dead = progress.redis_client_for("redis://127.0.0.1:1/0")
    monkeypatch.setattr(progress, "_redis", lambda: dead)
    monkeypatch.setattr(progress._Outage, "until", 0.0)


@pytest.mark.integration
def test_with_redis_down_the_work_goes_on_and_the_stream_completes_by_polling(
    committed_jobs: tuple[Organization, list[Job]], monkeypatch: pytest.MonkeyPatch
) -> None:
    organization, jobs = committed_jobs
    _redis_down(monkeypatch)
    monkeypatch.setattr(progress, "EVENTS_FALLBACK_SECONDS", SLOW_FALLBACK_SECONDS)
    job = _job(organization, jobs)
    reader = Reader(_job_stream(organization, job.pk))
    reader.arrival('"status": "queued"')
    assert _claim_and_finish(organization, job)  # a failed notice never fails the work
    reader.arrival('"status": "succeeded"', timeout=5)
    assert reader.join(5)


def test_a_redis_failure_during_the_wait_turns_the_stream_to_polling(
    two_tenants: tuple[Organization, Organization], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = two_tenants
    monkeypatch.setattr(progress, "EVENTS_FALLBACK_SECONDS", SLOW_FALLBACK_SECONDS)
    monkeypatch.setattr(progress, "REDIS_RETRY_SECONDS", SLOW_FALLBACK_SECONDS)

    class BrokenPubSub:
        def subscribe(self, channel: str) -> None:
            pass

        def get_message(self, timeout: float = 0.0) -> None:
            raise redis.ConnectionError("Connection reset by peer")

        def close(self) -> None:
            pass

    class Client:
        def pubsub(self, **_: Any) -> BrokenPubSub:
            return BrokenPubSub()

    monkeypatch.setattr(progress, "_redis", Client)
    stop = threading.Event()
    stream, _ = _counting_stream(a, uuid.uuid4(), stop)
    reader = Reader(stream)
    reader.arrival('"n": 4', timeout=5)  # read every EVENTS_POLL_SECONDS, not every 30 s
    stop.set()
    assert reader.join(5)


def test_an_idle_stream_sends_a_comment_line_to_keep_proxies_from_cutting_it(
    two_tenants: tuple[Organization, Organization], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = two_tenants
    monkeypatch.setattr(progress, "EVENTS_FALLBACK_SECONDS", SLOW_FALLBACK_SECONDS)
    monkeypatch.setattr(progress, "EVENTS_HEARTBEAT_SECONDS", 0.3)
    stop = threading.Event()
    object_id = uuid.uuid4()
    stream, reads = _counting_stream(a, object_id, stop)
    reader = Reader(stream)
    reader.arrival(": keep-alive\n\n", timeout=5)
    assert len(reads) == 1  # a heartbeat is no read
    stop.set()
    progress._publish(progress.progress_channel(organization=a, topic="job", object_id=object_id))
    assert reader.join(5)


@pytest.mark.integration
def test_an_open_stream_reads_the_database_a_few_times_a_minute_not_twice_a_second(
    committed_jobs: tuple[Organization, list[Job]], monkeypatch: pytest.MonkeyPatch
) -> None:
    organization, jobs = committed_jobs
    idle_seconds = 6.0  # more than one fallback read (every 5 s)
    per_minute: dict[str, float] = {}
    for mode in ("pubsub", "polling"):
        if mode == "polling":
            _redis_down(monkeypatch)  # what every stream did before: a read every 0.5 s
        job = _job(organization, jobs)
        reader = Reader(_job_stream(organization, job.pk))
        opened = reader.arrival('"status": "queued"')
        before = reader.queries
        time.sleep(max(0.0, opened + idle_seconds - time.monotonic()))
        per_minute[mode] = (reader.queries - before) / (time.monotonic() - opened) * 60
        assert _claim_and_finish(organization, job)
        assert reader.join(10)
    print(f"queries per idle stream-minute: pub/sub {per_minute['pubsub']:.0f}, polling {per_minute['polling']:.0f}")
    assert per_minute["pubsub"] * 3 < per_minute["polling"]
