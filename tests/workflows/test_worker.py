"""A workflow run through the API on a real Celery worker process, against the fake provider over HTTP."""

from __future__ import annotations

import signal
import time
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from django_tenants.utils import schema_context
from rest_framework.test import APIClient

from apps.apikeys.services import apikey_create
from apps.llm.models import AttemptStatus, UsageAttempt
from apps.work.services import work_reap
from apps.workflows.definitions import workflow_create
from apps.workflows.executor import STEP
from apps.workflows.models import RunStatus, StepRun, WorkflowRun
from apps.workflows.runs import run_start
from tests.conftest import LiveDb
from tests.factories import TEST_ACTOR
from tests.support.fake_provider import FakeProvider
from tests.support.worker import celery_worker, worker_start, worker_stop
from tests.workflows.factories import KEY

pytestmark = pytest.mark.integration

DEFINITION = {
    "output": "french",
    "steps": [
        {
            "name": "summary",
            "type": "llm",
            "model": "gpt-4o-mini",
            "max_tokens": 60,
            "prompt": "Summarize: {{ input.text }}",
        },
        {
            "name": "french",
            "type": "llm",
            "policy": "cheapest",
            "max_tokens": 60,
            "prompt": "Translate to French: {{ steps.summary.output }}",
        },
        # Independent of summary: runs at the same time, then a map over its output, three at once.
        {"name": "words", "type": "transform", "jsonpath": "$.words[*]", "value": "{{ input.meta }}"},
        {
            "name": "define",
            "type": "map",
            "items": "{{ steps.words.output }}",
            "concurrency": 3,
            "step": {"type": "llm", "model": "gpt-4o-mini", "max_tokens": 20, "prompt": "Define {{ item }}"},
        },
    ],
}


def _worker_env(provider: FakeProvider) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": "sk-test-platform",
        "OPENAI_BASE_URL": provider.openai_base_url,
        "JOB_HEARTBEAT_SECONDS": "1",
        "JOB_HEARTBEAT_TIMEOUT_SECONDS": "4",
    }


def _wait(client: APIClient, run_id: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (body := client.get(f"/api/v1/runs/{run_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, body
        time.sleep(0.2)
    result: dict[str, Any] = body
    return result


def test_the_issue_example_runs_on_a_worker_with_outputs_costs_and_ledger_matching_the_provider(
    live_db: LiveDb,
) -> None:
    organization = live_db.organization(slug="workflows-e2e")
    key = apikey_create(organization=organization, name="e2e", actor=TEST_ACTOR).key
    client = APIClient(HTTP_HOST="localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    words = ["cat", "mat", "hat", "bat"]
    with FakeProvider(latency_s=1.0) as provider, celery_worker(env=_worker_env(provider)):
        created = client.post("/api/v1/workflows", {"name": "e2e", "definition": DEFINITION}, format="json")
        assert created.status_code == 201, created.content
        started = client.post(
            f"/api/v1/workflows/{created.json()['id']}/runs",
            {"input": {"text": "The cat sat on the mat.", "meta": {"words": words}}},
            format="json",
        )
        assert started.status_code == 202, started.content
        run_id = started.json()["id"]
        began = time.monotonic()
        run = _wait(client, run_id)
        elapsed = time.monotonic() - began
        events = client.get(f"/api/v1/runs/{run_id}/events")
        stream = b"".join(events.streaming_content).decode()  # type: ignore[attr-defined]
        calls = [call for call in provider.calls if call.path.endswith("/chat/completions")]

    assert run["status"] == "succeeded", run
    steps = {step["name"]: step for step in run["steps"]}
    assert {name: step["status"] for name, step in steps.items()} == dict.fromkeys(steps, "succeeded")
    assert "The cat sat on the mat." in steps["summary"]["output"]
    assert steps["summary"]["output"] in steps["french"]["output"]
    assert run["output"] == steps["french"]["output"]
    assert steps["words"]["output"] == words
    assert [f"Define {word}" in text for word, text in zip(words, steps["define"]["output"], strict=True)] == [True] * 4
    assert steps["summary"]["model"] == "gpt-4o-mini"

    run_hex = run_id.replace("-", "")
    with schema_context(organization.schema_name):
        rows = list(UsageAttempt.objects.filter(request_id__startswith=f"wf-{run_hex}-"))
        step_rows = {step.name: step for step in StepRun.objects.filter(run_id=run_id)}
    assert {row.status for row in rows} == {AttemptStatus.SUCCEEDED}
    by_step = Counter(row.request_id.split("-")[2] for row in rows)
    assert by_step == {"0": 1, "1": 1, "3": 4}  # summary, french, and one per map item
    for name, position in (("summary", "0"), ("french", "1"), ("define", "3")):
        ledger = sum((row.cost_usd for row in rows if row.request_id.split("-")[2] == position), Decimal(0))
        assert step_rows[name].cost_usd == ledger == Decimal(steps[name]["cost_usd"]) > 0
    assert Decimal(run["cost_usd"]) == sum((row.cost_usd for row in rows), Decimal(0))

    # Every call the provider served has exactly one ledger row, and every OpenAI row one call.
    served = Counter(call.request_id for call in calls)
    assert max(served.values()) == 1
    openai_rows = {row.request_id for row in rows if row.provider == "openai"}
    assert set(served) == openai_rows and len(openai_rows) >= 5  # summary and the 4 items at least

    # Four items of 1 s each take 4 s one after the other; three at a time, 2 s plus the engine's
    # and the worker's overhead (a few hundred ms, more on a loaded machine: hence the margin).
    assert steps["define"]["duration_ms"] < 3500, steps["define"]["duration_ms"]
    print(f"\nworkflow e2e: run ended {elapsed:.2f} s after its start, map step {steps['define']['duration_ms']} ms")
    assert stream.count("event: run") >= 1 and stream.rstrip().endswith("}")
    assert '"status": "succeeded"' in stream.split("event: run")[-1]


def test_a_run_whose_worker_is_killed_mid_map_finishes_on_another_without_calling_twice(
    live_db: LiveDb, settings: Any
) -> None:
    """SIGKILL the worker while a map step's calls are in flight: the reaper sends the step again,
    another worker takes it over, settles the dead calls from their reservations, and runs only
    the items not done yet. Every call the provider served has exactly one ledger row."""
    organization = live_db.organization(slug="workflows-kill")
    settings.JOB_HEARTBEAT_TIMEOUT_SECONDS = 4
    settings.JOB_DISPATCH_RESEND_SECONDS = 6
    definition = {
        "steps": [
            {
                "name": "each",
                "type": "map",
                "items": "{{ input.items }}",
                "concurrency": 2,
                "step": {"type": "llm", "model": "gpt-4o-mini", "max_tokens": 16, "prompt": "Item {{ item }}"},
            },
            {
                "name": "last",
                "type": "llm",
                "model": "gpt-4o-mini",
                "max_tokens": 16,
                "prompt": "{{ steps.each.output }}",
            },
        ]
    }
    items = list(range(8))
    with FakeProvider(latency_s=1.0) as provider:
        env = _worker_env(provider)
        worker = worker_start(concurrency=4, env=env, name="k1")
        try:
            with schema_context(organization.schema_name):
                workflow = workflow_create(organization=organization, actor=KEY, name="kill", definition=definition)
                run = run_start(
                    organization=organization, principal=KEY, workflow=workflow.workflow, input={"items": items}
                )
                step = StepRun.objects.filter(run=run, name="each")
                deadline = time.monotonic() + 30
                # Some items done and a call in flight at the provider (under load the worker can be
                # between calls when the second item finishes).
                while len(step.get().items) < 2 or provider.open_requests == 0:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            worker = worker_start(concurrency=4, env=env, name="k2")
            deadline = time.monotonic() + 60
            with schema_context(organization.schema_name):
                while not WorkflowRun.objects.get(pk=run.pk).is_finished:
                    assert time.monotonic() < deadline, list(StepRun.objects.filter(run=run).values())
                    work_reap(organization=organization, kind=STEP)
                    time.sleep(0.5)
                run.refresh_from_db()
                steps: dict[str, Any] = {s.name: s for s in StepRun.objects.filter(run=run)}
                rows = list(UsageAttempt.objects.filter(request_id__startswith=f"wf-{run.pk.hex}-"))
        finally:
            worker_stop(worker)
        calls = [call for call in provider.calls if call.path.endswith("/chat/completions")]

    assert run.status == RunStatus.SUCCEEDED, (run.error_class, run.error_message)
    assert steps["each"].attempts == 2 and len(steps["each"].output) == len(items)
    served = Counter(call.request_id for call in calls)
    assert max(served.values()) == 1, "the provider received the same request twice"
    ledger = Counter(row.request_id for row in rows)
    assert max(ledger.values()) == 1
    assert set(served) <= set(ledger), "a call the provider served has no ledger row"
    unserved = {row.request_id: row.status for row in rows if row.request_id not in served}
    assert set(unserved.values()) <= {AttemptStatus.SWEPT}, unserved
    # Each item succeeded exactly once, across both attempts; the killed calls were swept.
    succeeded_items = Counter(
        row.request_id.rsplit("-", 1)[1]
        for row in rows
        if row.status == AttemptStatus.SUCCEEDED and row.request_id.count("-") == 4
    )
    assert succeeded_items == dict.fromkeys((str(i) for i in items), 1), succeeded_items
    assert any(row.status == AttemptStatus.SWEPT for row in rows), "the kill landed on no call in flight"
    assert run.cost_usd == sum((row.cost_usd for row in rows), Decimal(0))
