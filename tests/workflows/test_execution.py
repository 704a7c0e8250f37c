"""Runs executed in-process, step by step as the workers would: dependencies, parallel dispatch,
branches, maps, costs against the ledger, failures, cancel, re-run and recovery from a dead worker."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from apps.agents.models import Agent
from apps.llm.budgets import Spender, attempt_reserve
from apps.llm.models import AttemptStatus, UsageAttempt
from apps.llm.services import budget_set
from apps.tenants.models import Organization
from apps.work.services import work_reap
from apps.workflows import executor
from apps.workflows import steps as steps_module
from apps.workflows.executor import STEP
from apps.workflows.models import RunStatus, StepRun, StepStatus, WorkflowRun
from apps.workflows.runs import (
    RunFinished,
    RunInputInvalid,
    RunNotRerunnable,
    run_cancel,
    run_rerun,
    run_start,
)
from cognitionos.celery import app as celery_app
from tests.factories import TEST_ACTOR
from tests.knowledge.factories import chunk_make, document_make, knowledge_base_make, simulated_embedding
from tests.support.fake_provider import FakeProvider
from tests.webhooks.receiver import http_receiver
from tests.workflows.factories import (
    EXAMPLE,
    FRENCH,
    KEY,
    SUMMARY,
    dispatched,
    drive,
    run_through,
    step_execute,
    steps_of,
    workflow_make,
)


def _ledger(run: WorkflowRun, position: int) -> list[UsageAttempt]:
    return list(UsageAttempt.objects.filter(request_id__startswith=f"wf-{run.pk.hex}-{position}-").order_by("id"))


def test_the_issue_example_runs_summary_then_french_with_outputs_costs_and_ledger_rows(tenant: Organization) -> None:
    workflow = workflow_make(tenant)
    run = run_start(organization=tenant, principal=KEY, workflow=workflow, input={"text": "A long story about cats."})
    assert run.status == RunStatus.QUEUED
    assert dispatched(run) == ["summary"]  # french waits for summary

    step_execute(organization=tenant, run_id=run.pk, step_name="summary")
    assert dispatched(run) == ["french"]
    run = drive(tenant, run)

    assert run.status == RunStatus.SUCCEEDED
    steps = steps_of(run)
    summary, french = steps["summary"], steps["french"]
    assert summary.status == french.status == StepStatus.SUCCEEDED
    assert "A long story about cats." in summary.output
    assert summary.output in french.output  # the simulator quotes the prompt it got
    assert run.output == french.output
    assert summary.model == "simulated-mini" and summary.cache_layer == "miss"
    assert summary.input_tokens > 0 and summary.output_tokens > 0
    for position, step in ((0, summary), (1, french)):
        (row,) = _ledger(run, position)
        assert row.request_id == f"wf-{run.pk.hex}-{position}-1"
        assert row.status == AttemptStatus.SUCCEEDED and row.cost_usd == step.cost_usd > 0
        assert (row.principal_kind, row.api_key_id) == ("api_key", 7)
    assert run.cost_usd == summary.cost_usd + french.cost_usd
    assert run.started_at is not None and run.finished_at is not None


def test_a_step_delivered_twice_calls_the_model_once(tenant: Organization) -> None:
    run = run_start(organization=tenant, principal=KEY, workflow=workflow_make(tenant), input={"text": "x"})
    step_execute(organization=tenant, run_id=run.pk, step_name="summary")
    step_execute(organization=tenant, run_id=run.pk, step_name="summary")
    assert len(_ledger(run, 0)) == 1
    assert steps_of(run)["summary"].attempts == 1


def test_a_live_workers_step_is_not_taken_by_a_redelivered_message(tenant: Organization) -> None:
    run = run_start(organization=tenant, principal=KEY, workflow=workflow_make(tenant), input={"text": "x"})
    StepRun.objects.filter(run=run, name="summary").update(
        status=StepStatus.RUNNING, attempts=1, started_at=timezone.now(), heartbeat_at=timezone.now()
    )
    step_execute(organization=tenant, run_id=run.pk, step_name="summary")
    assert steps_of(run)["summary"].status == StepStatus.RUNNING
    assert _ledger(run, 0) == []


def test_independent_steps_are_sent_together_and_a_join_waits_for_both(tenant: Organization) -> None:
    definition = {
        "steps": [
            {"name": "a", "type": "transform", "template": "A={{ input.x }}"},
            {"name": "b", "type": "transform", "template": "B={{ input.x }}"},
            {"name": "both", "type": "transform", "template": "{{ steps.a.output }} {{ steps.b.output }}"},
        ]
    }
    run = run_start(organization=tenant, principal=KEY, workflow=workflow_make(tenant, definition), input={"x": 1})
    assert dispatched(run) == ["a", "b"]
    step_execute(organization=tenant, run_id=run.pk, step_name="a")
    assert dispatched(run) == ["b"]
    run = drive(tenant, run)
    assert (run.status, run.output) == (RunStatus.SUCCEEDED, "A=1 B=1")


@pytest.mark.parametrize(("lang", "taken", "skipped"), [("fr", "fr", "en"), ("de", "en", "fr")])
def test_a_condition_runs_one_branch_skips_the_other_and_a_join_takes_the_branch_that_ran(
    tenant: Organization, lang: str, taken: str, skipped: str
) -> None:
    definition = {
        "output": "final",
        "steps": [
            {
                "name": "check",
                "type": "condition",
                "value": "{{ input.lang }}",
                "equals": "fr",
                "then": "fr",
                "else": "en",
            },
            {"name": "fr", "type": "transform", "template": "Bonjour {{ input.name }}"},
            {"name": "en", "type": "transform", "template": "Hello {{ input.name }}"},
            {"name": "after_fr", "type": "transform", "template": "{{ steps.fr.output }}!"},
            {"name": "final", "type": "transform", "template": "{{ steps.fr.output ?? steps.en.output }}"},
        ],
    }
    run = run_through(tenant, workflow_make(tenant, definition), {"lang": lang, "name": "Ada"})
    steps = steps_of(run)
    assert run.status == RunStatus.SUCCEEDED
    assert steps["check"].output is (lang == "fr")
    assert steps[taken].status == StepStatus.SUCCEEDED
    assert steps[skipped].status == StepStatus.SKIPPED and steps[skipped].started_at is None
    assert steps["after_fr"].status == (StepStatus.SUCCEEDED if taken == "fr" else StepStatus.SKIPPED)
    assert run.output == ("Bonjour Ada" if taken == "fr" else "Hello Ada")


@pytest.mark.parametrize(
    ("test", "value", "expected"),
    [
        ({"contains": "cat"}, "a cat sat", True),
        ({"contains": "dog"}, "a cat sat", False),
        ({"contains": 2}, [1, 2, 3], True),
        ({"matches": r"^\d{3}-\d{4}$"}, "555-1234", True),
        ({"matches": r"^\d{3}$"}, "5555", False),
        ({"matches": r'^\{"a": \[1, 2\]\}$'}, {"a": [1, 2]}, True),  # other values are matched as JSON
        ({"equals": {"a": 1}}, {"a": 1}, True),
        ({"equals": "yes"}, " yes\n", True),
    ],
)
def test_condition_tests(tenant: Organization, test: dict[str, Any], value: Any, expected: bool) -> None:
    definition = {
        "steps": [
            {"name": "check", "type": "condition", "value": "{{ input.v }}", **test, "then": "yes"},
            {"name": "yes", "type": "transform", "template": "yes"},
        ]
    }
    run = run_through(tenant, workflow_make(tenant, definition), {"v": value})
    assert steps_of(run)["check"].output is expected
    assert steps_of(run)["yes"].status == (StepStatus.SUCCEEDED if expected else StepStatus.SKIPPED)


def test_transforms_by_template_and_by_jsonpath_over_json_text(tenant: Organization) -> None:
    definition = {
        "steps": [
            {"name": "doc", "type": "transform", "template": "{{ input.raw }}"},
            {
                "name": "names",
                "type": "transform",
                "jsonpath": "$.people[?(@.age > 30)].name",
                "value": "{{ steps.doc.output }}",
            },
            {
                "name": "first",
                "type": "transform",
                "jsonpath": "$.people[*].name",
                "value": "{{ steps.doc.output }}",
                "first": True,
            },
            {"name": "obj", "type": "transform", "template": "{{ input.meta }}"},
            {"name": "text", "type": "transform", "template": "{{ steps.first.output }} of {{ steps.obj.output }}"},
        ]
    }
    raw = json.dumps({"people": [{"name": "Ann", "age": 40}, {"name": "Bob", "age": 20}, {"name": "Cy", "age": 31}]})
    run = run_through(tenant, workflow_make(tenant, definition), {"raw": raw, "meta": {"k": [1]}})
    steps = steps_of(run)
    assert steps["names"].output == ["Ann", "Cy"]
    assert steps["first"].output == "Ann"
    assert steps["obj"].output == {"k": [1]}
    assert run.output == 'Ann of {"k": [1]}'


def test_a_map_runs_its_llm_step_per_item_and_keeps_each_items_ledger_row(tenant: Organization) -> None:
    definition = {
        "steps": [
            {
                "name": "each",
                "type": "map",
                "items": "{{ input.docs }}",
                "concurrency": 1,
                "step": {"type": "llm", "model": "simulated-mini", "prompt": "Title {{ index }}: {{ item.title }}"},
            }
        ]
    }
    docs = [{"title": "alpha"}, {"title": "beta"}, {"title": "gamma"}]
    run = run_through(tenant, workflow_make(tenant, definition), {"docs": docs})
    step = steps_of(run)["each"]
    assert run.status == RunStatus.SUCCEEDED
    assert [("Title 0: alpha" in out, "beta" in out) for out in step.output[:2]] == [(True, False), (False, True)]
    assert "Title 2: gamma" in step.output[2]
    rows = _ledger(run, 0)
    assert sorted(row.request_id for row in rows) == [f"wf-{run.pk.hex}-0-1-{i}" for i in range(3)]
    assert step.cost_usd == sum(row.cost_usd for row in rows) == run.cost_usd
    assert step.model == "simulated-mini" and step.output_tokens == sum(row.output_tokens for row in rows)


def test_a_failing_map_item_fails_the_step_with_the_items_index(tenant: Organization) -> None:
    definition = {
        "steps": [
            {
                "name": "each",
                "type": "map",
                "items": "{{ input.docs }}",
                "concurrency": 1,
                "step": {"type": "transform", "template": "{{ item.title }}"},
            },
            {"name": "after", "type": "transform", "template": "{{ steps.each.output }}"},
        ]
    }
    run = run_through(tenant, workflow_make(tenant, definition), {"docs": [{"title": "a"}, {"name": "no title"}]})
    steps = steps_of(run)
    assert run.status == RunStatus.FAILED and run.error_class == "template_error"
    assert steps["each"].status == StepStatus.FAILED
    assert steps["each"].error_message.startswith("item 1: template: {{ item.title }}: item has no field 'title'")
    assert steps["each"].items["0"]["output"] == "a"
    assert steps["after"].status == StepStatus.CANCELLED


def test_map_items_that_are_not_a_list_fail_the_step(tenant: Organization) -> None:
    definition = {
        "steps": [
            {"name": "each", "type": "map", "items": "{{ input.docs }}", "step": {"type": "transform", "template": "x"}}
        ]
    }
    run = run_through(tenant, workflow_make(tenant, definition), {"docs": "not a list"})
    assert (run.status, steps_of(run)["each"].error_class) == (RunStatus.FAILED, "invalid_items")


def test_a_missing_input_field_fails_the_step_at_run_time(tenant: Organization) -> None:
    run = run_through(tenant, workflow_make(tenant), {"txt": "typo"})
    steps = steps_of(run)
    assert (steps["summary"].status, steps["summary"].error_class) == (StepStatus.FAILED, "template_error")
    assert "input has no field 'text'" in steps["summary"].error_message
    assert steps["french"].status == StepStatus.CANCELLED
    assert run.error_message.startswith("step 'summary' failed: prompt: {{ input.text }}")


def test_declared_inputs_are_required_and_unknown_ones_refused(tenant: Organization) -> None:
    workflow = workflow_make(tenant, {**EXAMPLE, "inputs": ["text"]})
    with pytest.raises(RunInputInvalid) as missing:
        run_start(organization=tenant, principal=KEY, workflow=workflow, input={})
    assert missing.value.param == "input.text"
    with pytest.raises(RunInputInvalid) as extra:
        run_start(organization=tenant, principal=KEY, workflow=workflow, input={"text": "x", "txet": "y"})
    assert extra.value.param == "input.txet"
    assert not WorkflowRun.objects.exists()


def test_a_step_refused_by_the_budget_fails_the_run_and_a_rerun_keeps_the_earlier_outputs(
    tenant: Organization,
) -> None:
    pro = {key: value for key, value in FRENCH.items() if key != "policy"} | {"model": "simulated-pro"}
    definition = {
        "steps": [
            {**SUMMARY, "max_tokens": 50},
            pro,
            {"name": "shout", "type": "transform", "template": "{{ steps.french.output }}!"},
        ]
    }
    workflow = workflow_make(tenant, definition)
    # Enough for simulated-mini's 50 tokens, never for simulated-pro's 32,000 worst case.
    budget_set(organization=tenant, scope="organization", period="day", limit_usd=Decimal("0.01"), actor=TEST_ACTOR)
    first = run_through(tenant, workflow, {"text": "story"})
    steps = steps_of(first)
    assert first.status == RunStatus.FAILED and first.error_class == "budget_exceeded"
    assert steps["summary"].status == StepStatus.SUCCEEDED
    assert (steps["french"].status, steps["french"].error_class) == (StepStatus.FAILED, "budget_exceeded")
    assert steps["shout"].status == StepStatus.CANCELLED
    assert _ledger(first, 1) == []  # refused before any call

    budget_set(organization=tenant, scope="organization", period="day", limit_usd=Decimal("5"), actor=TEST_ACTOR)
    rerun = run_rerun(organization=tenant, actor=KEY, run=first)
    assert dispatched(rerun) == ["french"]
    rerun = drive(tenant, rerun)
    again = steps_of(rerun)
    assert (rerun.status, rerun.rerun_of_id, rerun.version_id) == (RunStatus.SUCCEEDED, first.pk, first.version_id)
    assert again["summary"].reused and again["summary"].output == steps["summary"].output
    assert again["summary"].cost_usd == 0 and _ledger(rerun, 0) == []  # not called again
    assert again["french"].status == StepStatus.SUCCEEDED and not again["french"].reused
    assert steps["summary"].output in again["french"].output
    assert rerun.output == again["french"].output + "!"
    assert rerun.cost_usd == again["french"].cost_usd == _ledger(rerun, 1)[0].cost_usd
    with pytest.raises(RunNotRerunnable):
        run_rerun(organization=tenant, actor=KEY, run=rerun)


def test_cancel_stops_pending_steps_and_a_call_in_flight_finishes_without_starting_more(
    tenant: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = run_start(organization=tenant, principal=KEY, workflow=workflow_make(tenant), input={"text": "x"})
    real = steps_module.run_llm

    def cancel_during_call(*args: Any, **kwargs: Any) -> Any:
        run_cancel(organization=tenant, actor=KEY, run=WorkflowRun.objects.get(pk=run.pk))
        return real(*args, **kwargs)

    monkeypatch.setattr(executor, "run_llm", cancel_during_call)  # as the executor imported it
    step_execute(organization=tenant, run_id=run.pk, step_name="summary")
    run.refresh_from_db()
    steps = steps_of(run)
    assert run.status == RunStatus.CANCELLED and run.error_class == "cancelled"
    assert steps["summary"].status == StepStatus.SUCCEEDED  # the call in flight finished and was billed
    assert run.cost_usd == steps["summary"].cost_usd == _ledger(run, 0)[0].cost_usd > 0
    assert steps["french"].status == StepStatus.CANCELLED and dispatched(run) == []
    with pytest.raises(RunFinished):
        run_cancel(organization=tenant, actor=KEY, run=run)


def test_a_cancelled_runs_step_message_arriving_late_does_nothing(tenant: Organization) -> None:
    run = run_start(organization=tenant, principal=KEY, workflow=workflow_make(tenant), input={"text": "x"})
    run_cancel(organization=tenant, actor=KEY, run=run)
    step_execute(organization=tenant, run_id=run.pk, step_name="summary")
    assert steps_of(run)["summary"].status == StepStatus.CANCELLED
    assert _ledger(run, 0) == []


def test_the_reaper_resends_a_step_whose_worker_died_and_the_takeover_settles_the_dead_attempt(
    tenant: Organization, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    run = run_start(organization=tenant, principal=KEY, workflow=workflow_make(tenant), input={"text": "x"})
    long_ago = timezone.now() - dt.timedelta(minutes=10)
    StepRun.objects.filter(run=run, name="summary").update(
        status=StepStatus.RUNNING, attempts=1, started_at=long_ago, heartbeat_at=long_ago, admitted_at=long_ago
    )
    dead = attempt_reserve(
        spender=Spender(organization=tenant, principal=KEY),
        request_id=f"wf-{run.pk.hex}-0-1",
        attempt=1,
        model_name="simulated-mini",
        provider="simulator",
        amount_usd=Decimal("0.01"),
        max_cost_usd=None,
    )
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, kwargs, countdown=None: sent.append(kwargs))
    with django_capture_on_commit_callbacks(execute=True):
        assert work_reap(organization=tenant, kind=STEP) == {"requeued": 1, "failed": 0, "resent": 0}
    step_id = steps_of(run)["summary"].pk
    assert sent == [{"tenant_id": tenant.pk, "kind": "workflow_step", "item_id": str(step_id)}]
    assert work_reap(organization=tenant, kind=STEP) == {"requeued": 0, "failed": 0, "resent": 0}  # not again

    step_execute(organization=tenant, run_id=run.pk, step_name="summary")
    dead.refresh_from_db()
    assert (dead.status, dead.cost_usd) == (AttemptStatus.SWEPT, Decimal("0.01"))
    step = steps_of(run)["summary"]
    assert (step.status, step.attempts) == (StepStatus.SUCCEEDED, 2)
    settled = UsageAttempt.objects.get(request_id=f"wf-{run.pk.hex}-0-2")
    assert step.cost_usd == settled.cost_usd + Decimal("0.01")  # the dead attempt's charge counts too


def test_a_step_whose_worker_keeps_dying_fails_instead_of_running_forever(tenant: Organization, settings: Any) -> None:
    run = run_start(organization=tenant, principal=KEY, workflow=workflow_make(tenant), input={"text": "x"})
    long_ago = timezone.now() - dt.timedelta(minutes=10)
    StepRun.objects.filter(run=run, name="summary").update(
        status=StepStatus.RUNNING, attempts=settings.JOB_MAX_RUNS, started_at=long_ago, heartbeat_at=long_ago
    )
    step_execute(organization=tenant, run_id=run.pk, step_name="summary")
    run.refresh_from_db()
    assert (run.status, steps_of(run)["summary"].error_class) == (RunStatus.FAILED, "WorkerLost")


def test_an_llm_step_over_an_agent_uses_its_model_and_system_prompt(tenant: Organization) -> None:
    Agent.objects.create(name="translator", model="simulated-pro", system_prompt="You translate.", max_tokens=40)
    definition = {"steps": [{"name": "t", "type": "llm", "agent": "translator", "prompt": "Hola {{ input.name }}"}]}
    run = run_through(tenant, workflow_make(tenant, definition), {"name": "Ada"})
    step = steps_of(run)["t"]
    assert (run.status, step.model) == (RunStatus.SUCCEEDED, "simulated-pro")
    assert "Hola Ada" in step.output
    assert step.output_tokens <= 40


def test_an_http_step_sends_the_rendered_request_and_reads_a_json_answer(tenant: Organization) -> None:
    with http_receiver() as receiver:
        receiver.extra_headers = {"Content-Type": "application/json"}
        receiver.response_body = b'{"ok": true, "id": 42}'
        definition = {
            "steps": [
                {
                    "name": "call",
                    "type": "http",
                    "method": "POST",
                    "url": receiver.url + "?q={{ input.q }}",
                    "headers": {"X-Token": "t-{{ input.q }}"},
                    "body": {"text": "{{ input.text }}", "n": "{{ input.n }}", "fixed": 3},
                },
                {"name": "id", "type": "transform", "template": "{{ steps.call.output.body.id }}"},
            ]
        }
        run = run_through(tenant, workflow_make(tenant, definition), {"q": "abc", "text": "hi", "n": [1, 2]})
        (request,) = receiver.received
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    assert steps_of(run)["call"].output == {"status": 200, "body": {"ok": True, "id": 42}}
    assert run.output == 42
    assert (request.method, request.path) == ("POST", "/hooks/in?q=abc")
    assert request.headers["X-Token"] == "t-abc"
    assert json.loads(request.body) == {"text": "hi", "n": [1, 2], "fixed": 3}


def test_an_http_step_fails_on_an_error_status_and_refuses_private_addresses(
    tenant: Organization, settings: Any
) -> None:
    with http_receiver(statuses=[503]) as receiver:
        definition = {"steps": [{"name": "call", "type": "http", "url": receiver.url}]}
        run = run_through(tenant, workflow_make(tenant, definition), {})
        assert steps_of(run)["call"].error_class == "http_status"
        settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = False
        run = run_through(tenant, workflow_make(tenant, definition, name="private"), {})
        assert steps_of(run)["call"].error_class == "http_refused"
        assert len(receiver.received) == 1


def test_a_retrieve_step_finds_the_nearest_chunks_through_a_governed_embedding(tenant: Organization) -> None:
    texts = ["Cats sleep sixteen hours a day.", "The Eiffel tower is in Paris.", "Rust has a borrow checker."]
    facts = knowledge_base_make(name="Facts", dimensions=256)
    document = document_make(facts, title="Facts")
    for ordinal, text in enumerate(texts):
        chunk_make(document, ordinal=ordinal, text=text, vector=simulated_embedding(text, 256), heading_path="World")
    other = knowledge_base_make(name="Other", dimensions=256)
    chunk_make(
        document_make(other, title="Elsewhere"), ordinal=0, text=texts[1], vector=simulated_embedding(texts[1], 256)
    )
    definition = {
        "steps": [
            {"name": "find", "type": "retrieve", "query": "{{ input.q }}", "top_k": 2, "knowledge_base": "facts"},
            {
                "name": "answer",
                "type": "llm",
                "model": "simulated-mini",
                "prompt": "Context: {{ steps.find.output.0.text }}",
            },
        ]
    }
    run = run_through(tenant, workflow_make(tenant, definition), {"q": texts[1]})
    found = steps_of(run)["find"]
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    assert len(found.output) == 2  # from "Facts" only (named case-insensitively), not "Other"
    assert {hit["document_title"] for hit in found.output} == {"Facts"}
    best = found.output[0]
    assert best["text"] == texts[1] and best["vector_score"] == pytest.approx(1.0) and best["text_rank"] > 0
    assert (best["heading_path"], best["ordinal"], best["document_id"]) == ("World", 1, str(document.pk))
    (row,) = _ledger(run, 0)
    assert row.model_name == "simulated-embedding" and row.cost_usd == found.cost_usd > 0
    assert row.source == "retrieval"
    assert texts[1] in str(run.output)


def test_a_retrieve_step_saved_with_document_ids_searches_the_knowledge_base_they_moved_to(
    tenant: Organization,
) -> None:
    from apps.workflows.models import WorkflowVersion

    moved = knowledge_base_make(name="Documents", dimensions=256)
    document = document_make(moved, title="Facts", metadata={"legacy_id": 3})
    chunk_make(document, ordinal=0, text="The Eiffel tower is in Paris.", vector=simulated_embedding("x", 256))
    knowledge_base_make(name="Other", dimensions=256)
    step = {"name": "find", "type": "retrieve", "query": "{{ input.q }}", "knowledge_base": "Other"}
    workflow = workflow_make(tenant, {"steps": [step]})
    # As saved before knowledge bases (knowledge 0003 kept the document's old id as `legacy_id`).
    old = {"name": "find", "type": "retrieve", "query": "{{ input.q }}", "documents": [3]}
    WorkflowVersion.objects.filter(workflow=workflow).update(definition={"steps": [old]})
    run = run_through(tenant, workflow, {"q": "Eiffel tower"})
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    assert [hit["document_title"] for hit in steps_of(run)["find"].output] == ["Facts"]


@pytest.mark.parametrize(
    ("step", "location", "message"),
    [
        ({}, "steps[0].knowledge_base", "missing field: the knowledge base to search"),
        ({"knowledge_base": "Nowhere"}, "steps[0].knowledge_base", "no knowledge base 'Nowhere' in this organization"),
        (
            {"knowledge_base": "Facts", "documents": [1]},
            "steps[0].documents",
            "retrieve steps search a `knowledge_base` now",
        ),
        ({"knowledge_base": "Facts", "mode": "fuzzy"}, "steps[0].mode", "unknown mode 'fuzzy'"),
    ],
)
def test_a_retrieve_step_must_name_a_knowledge_base_of_the_organization(
    tenant: Organization, step: dict[str, Any], location: str, message: str
) -> None:
    from apps.workflows.definition import DefinitionInvalid
    from apps.workflows.definitions import definition_check

    knowledge_base_make(name="Facts", dimensions=256)
    definition = {"steps": [{"name": "find", "type": "retrieve", "query": "q", **step}]}
    with pytest.raises(DefinitionInvalid) as refused:
        definition_check(raw=definition)
    assert refused.value.location == location and refused.value.by_location[location][0].startswith(message)


def test_the_end_of_a_run_is_a_webhook_event(tenant: Organization) -> None:
    from apps.webhooks.models import WebhookDelivery
    from apps.webhooks.services import webhook_endpoint_create

    webhook_endpoint_create(organization=tenant, actor=TEST_ACTOR, url="http://127.0.0.1:9/x", events=["run.*"])
    succeeded = run_through(tenant, workflow_make(tenant), {"text": "x"})
    failed = run_through(tenant, workflow_make(tenant, name="other"), {"wrong": "x"})
    events = {(d.event_type, d.payload["run"]["id"]) for d in WebhookDelivery.objects.all()}
    assert events == {("run.succeeded", str(succeeded.pk)), ("run.failed", str(failed.pk))}
    payload = WebhookDelivery.objects.get(event_type="run.succeeded").payload["run"]
    assert payload["output"] == succeeded.output and payload["cost_usd"] == str(succeeded.cost_usd)
    assert payload["workflow"]["name"] == "example" and payload["version"] == 1


def test_a_provider_outage_sends_the_step_back_to_the_queue_instead_of_failing_the_run(
    tenant: Organization, fake_provider: FakeProvider, settings: Any
) -> None:
    """Like a job: a transient refusal (every provider down) retries the step later, up to the
    runtime's limit of attempts; the run goes on once the provider is back."""
    definition = {"steps": [{"name": "ask", "type": "llm", "model": "gpt-4o-mini", "max_tokens": 16, "prompt": "Hi"}]}
    run = run_start(organization=tenant, principal=KEY, workflow=workflow_make(tenant, definition), input={})
    fake_provider.fail_next(1000, status=503)
    step_execute(organization=tenant, run_id=run.pk, step_name="ask")
    run.refresh_from_db()
    step = steps_of(run)["ask"]
    assert run.status in (RunStatus.QUEUED, RunStatus.RUNNING) and run.error_class == ""
    assert (step.status, step.attempts, step.error_class) == (StepStatus.QUEUED, 1, "provider_unavailable")
    assert dispatched(run) == ["ask"]  # sent again (after a backoff), and the reaper resends it if lost
    fake_provider.reset()
    step_execute(organization=tenant, run_id=run.pk, step_name="ask")
    run.refresh_from_db()
    step = steps_of(run)["ask"]
    assert (run.status, step.status, step.attempts) == (RunStatus.SUCCEEDED, StepStatus.SUCCEEDED, 2)
    assert step.output and step.cost_usd > 0


def test_a_step_whose_provider_stays_down_fails_the_run_after_the_last_attempt(
    tenant: Organization, fake_provider: FakeProvider, settings: Any
) -> None:
    definition = {"steps": [{"name": "ask", "type": "llm", "model": "gpt-4o-mini", "max_tokens": 16, "prompt": "Hi"}]}
    run = run_start(organization=tenant, principal=KEY, workflow=workflow_make(tenant, definition), input={})
    fake_provider.fail_next(10_000, status=503)
    run = drive(tenant, run)
    step = steps_of(run)["ask"]
    assert (step.status, step.attempts, step.error_class) == (
        StepStatus.FAILED,
        settings.JOB_MAX_RUNS,
        "provider_unavailable",
    )
    assert (run.status, run.error_class) == (RunStatus.FAILED, "provider_unavailable")
