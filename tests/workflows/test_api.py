"""REST API v1 for workflows and runs: create and version, validation errors with their location,
runs with per-step results, cancel, re-run, cost preview, events, idempotency and isolation."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from rest_framework.test import APIClient

from apps.llm.services import budget_set
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from apps.workflows.models import Workflow, WorkflowRun
from tests.conftest import ApiClientFor
from tests.factories import TEST_ACTOR
from tests.workflows.factories import EXAMPLE, FRENCH, SUMMARY, drive

YAML = """
inputs: [text]
steps:
  - name: summary
    type: llm
    model: simulated-mini
    prompt: "Summarize: {{ input.text }}"
  - name: french
    type: llm
    policy: cheapest
    prompt: "Translate to French: {{ steps.summary.output }}"
"""


@pytest.fixture
def a(two_tenants: tuple[Organization, Organization]) -> Organization:
    return two_tenants[0]


@pytest.fixture
def client(a: Organization, api_client_for: ApiClientFor) -> APIClient:
    return api_client_for(a)


def _create(client: APIClient, definition: Any = None, name: str = "example") -> dict[str, Any]:
    response = client.post("/api/v1/workflows", {"name": name, "definition": definition or EXAMPLE}, format="json")
    assert response.status_code == 201, response.content
    body: dict[str, Any] = response.json()
    return body


def _start(client: APIClient, workflow_id: str, data: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    headers = {"Idempotency-Key": key} if key else None
    response = client.post(f"/api/v1/workflows/{workflow_id}/runs", {"input": data}, format="json", headers=headers)
    assert response.status_code == 202, response.content
    body: dict[str, Any] = response.json()
    return body


def _drive(organization: Organization, run_id: str) -> None:
    with organization_schema(organization):
        drive(organization, WorkflowRun.objects.get(pk=run_id))


def test_create_answers_201_with_the_first_version_and_get_and_list_show_it(client: APIClient) -> None:
    created = _create(client)
    assert (created["name"], created["version"], created["definition"]) == ("example", 1, EXAMPLE)
    fetched = client.get(f"/api/v1/workflows/{created['id']}").json()
    assert fetched == created
    listed = client.get("/api/v1/workflows").json()
    assert [item["id"] for item in listed["results"]] == [created["id"]]


def test_a_yaml_definition_is_accepted_and_stored_as_json(client: APIClient) -> None:
    created = _create(client, YAML)
    assert created["definition"]["inputs"] == ["text"]
    assert [step["name"] for step in created["definition"]["steps"]] == ["summary", "french"]


@pytest.mark.parametrize(
    ("definition", "param", "message"),
    [
        (
            {"steps": [SUMMARY, {**FRENCH, "prompt": "{{ steps.summry.output }}"}]},
            "definition.steps[1].prompt",
            "definition.steps[1].prompt: unknown step 'summry' in {{ steps.summry.output }}",
        ),
        (
            {"steps": [{**SUMMARY, "prompt": "{{ steps.french.output }}"}, FRENCH]},
            "definition.steps[0]",
            "definition.steps[0]: cycle summary -> french -> summary",
        ),
        (
            {"steps": [{**SUMMARY, "model": "no-such-model"}]},
            "definition.steps[0].model",
            "definition.steps[0].model: unknown model 'no-such-model'; see the model catalog",
        ),
        ({"steps": [{**SUMMARY, "type": "sql"}]}, "definition.steps[0].type", "definition.steps[0].type: unknown step"),
        ("steps: [unclosed", "definition.definition", "definition.definition: invalid YAML at line 1"),
    ],
)
def test_invalid_definitions_get_400_with_the_exact_location_and_create_nothing(
    a: Organization, client: APIClient, definition: Any, param: str, message: str
) -> None:
    response = client.post("/api/v1/workflows", {"name": "bad", "definition": definition}, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == ("invalid_request", param, "invalid_request_error")
    assert error["message"].startswith(message), error["message"]
    with organization_schema(a):
        assert not Workflow.objects.exists()


def test_every_problem_is_in_the_details(client: APIClient) -> None:
    definition = {"steps": [{**SUMMARY, "max_tokens": 0}, {**FRENCH, "prompt": "{{ steps.nope.output }}"}]}
    error = client.post("/api/v1/workflows", {"name": "bad", "definition": definition}, format="json").json()["error"]
    assert set(error["details"]["definition"]) == {"steps[0].max_tokens", "steps[1].prompt"}


def test_a_taken_name_is_409(client: APIClient) -> None:
    _create(client)
    response = client.post("/api/v1/workflows", {"name": "example", "definition": EXAMPLE}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "workflow_name_taken"


def test_put_saves_a_new_version_and_patch_can_rename_without_one(client: APIClient) -> None:
    created = _create(client)
    url = f"/api/v1/workflows/{created['id']}"
    changed = {"steps": [SUMMARY]}
    updated = client.put(url, {"definition": changed}, format="json")
    assert updated.status_code == 200, updated.content
    assert (updated.json()["version"], updated.json()["definition"]) == (2, changed)
    renamed = client.patch(url, {"name": "renamed"}, format="json").json()
    assert (renamed["name"], renamed["version"]) == ("renamed", 2)
    assert client.put(url, {"name": "x"}, format="json").status_code == 400
    invalid = client.patch(url, {"definition": {"steps": [{**SUMMARY, "prompt": "{{ item }}"}]}}, format="json")
    assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "definition.steps[0].prompt"
    versions = client.get(f"{url}/versions").json()["results"]
    assert [(v["version"], v["definition"]) for v in versions] == [(2, changed), (1, EXAMPLE)]


def test_a_run_answers_202_then_shows_each_steps_output_cost_tokens_and_model(
    a: Organization, client: APIClient
) -> None:
    workflow = _create(client, YAML)
    started = _start(client, workflow["id"], {"text": "The cat sat on the mat."})
    assert started["status"] == "queued" and started["version"] == 1
    assert [(step["name"], step["status"]) for step in started["steps"]] == [
        ("summary", "pending"),
        ("french", "pending"),
    ]
    _drive(a, started["id"])

    run = client.get(f"/api/v1/runs/{started['id']}").json()
    assert run["status"] == "succeeded", run
    summary, french = run["steps"]
    assert summary["type"] == "llm" and summary["model"] == "simulated-mini" and summary["cache"] == "miss"
    assert "The cat sat on the mat." in summary["output"]
    assert Decimal(summary["cost_usd"]) > 0 and summary["tokens"]["output"] > 0
    assert summary["duration_ms"] is not None and summary["error"] is None
    assert run["output"] == french["output"] and summary["output"] in french["output"]
    assert Decimal(run["cost_usd"]) == Decimal(summary["cost_usd"]) + Decimal(french["cost_usd"])
    assert run["timings"]["run_ms"] is not None


def test_a_run_of_a_workflow_with_declared_inputs_needs_them(client: APIClient) -> None:
    workflow = _create(client, YAML)
    response = client.post(f"/api/v1/workflows/{workflow['id']}/runs", {"input": {"txt": 1}}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_input", "input.text")
    assert error["message"] == "input.text: missing input 'text'"


def test_a_retried_start_with_the_same_idempotency_key_starts_one_run(a: Organization, client: APIClient) -> None:
    workflow = _create(client)
    first = _start(client, workflow["id"], {"text": "x"}, key="run-1")
    again = client.post(
        f"/api/v1/workflows/{workflow['id']}/runs",
        {"input": {"text": "x"}},
        format="json",
        HTTP_IDEMPOTENCY_KEY="run-1",
    )
    assert again.status_code == 202 and again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first["id"]
    with organization_schema(a):
        assert WorkflowRun.objects.count() == 1


def test_cancel_then_cancel_again_is_409(client: APIClient) -> None:
    run = _start(client, _create(client)["id"], {"text": "x"})
    cancelled = client.post(f"/api/v1/runs/{run['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert {step["status"] for step in cancelled.json()["steps"]} == {"cancelled"}
    again = client.post(f"/api/v1/runs/{run['id']}/cancel")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "run_finished")


def test_rerun_starts_a_new_run_from_the_failed_step_and_is_409_without_one(a: Organization, client: APIClient) -> None:
    workflow = _create(client)
    failed = _start(client, workflow["id"], {"wrong": "x"})
    _drive(a, failed["id"])
    assert client.get(f"/api/v1/runs/{failed['id']}").json()["status"] == "failed"
    rerun = client.post(f"/api/v1/runs/{failed['id']}/rerun")
    assert rerun.status_code == 202, rerun.content
    assert rerun.json()["rerun_of"] == failed["id"] and rerun.json()["id"] != failed["id"]
    succeeded = _start(client, workflow["id"], {"text": "x"})
    _drive(a, succeeded["id"])
    refused = client.post(f"/api/v1/runs/{succeeded['id']}/rerun")
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "run_not_failed")


def test_runs_are_listed_and_filtered_by_status_and_workflow(a: Organization, client: APIClient) -> None:
    one, two = _create(client), _create(client, name="two")
    done = _start(client, one["id"], {"text": "x"})
    _drive(a, done["id"])
    waiting = _start(client, two["id"], {"text": "y"})
    assert [r["id"] for r in client.get("/api/v1/runs?status=succeeded").json()["results"]] == [done["id"]]
    assert [r["id"] for r in client.get(f"/api/v1/runs?workflow={two['id']}").json()["results"]] == [waiting["id"]]
    assert len(client.get("/api/v1/runs").json()["results"]) == 2


def test_preview_gives_expected_and_worst_case_per_step_and_the_budgets(a: Organization, client: APIClient) -> None:
    workflow = _create(client)
    with organization_schema(a):
        budget_set(organization=a, scope="organization", period="day", limit_usd=Decimal("0.002"), actor=TEST_ACTOR)
    response = client.post(f"/api/v1/workflows/{workflow['id']}/preview", {"input": {"text": "hello"}}, format="json")
    assert response.status_code == 200, response.content
    preview = response.json()
    summary, french = preview["steps"]
    assert summary["model"] == "simulated-mini" and summary["expected_tokens"]["output"] == 300
    assert summary["worst_case_tokens"]["output"] == 16_384  # the model's ceiling: no max_tokens given
    for step in (summary, french):
        assert 0 < Decimal(step["expected_usd"]) < Decimal(step["worst_case_usd"])
    assert Decimal(preview["worst_case_usd"]) == Decimal(summary["worst_case_usd"]) + Decimal(french["worst_case_usd"])
    # french's prompt carries summary's answer: its worst case grows with summary's.
    assert french["worst_case_tokens"]["input"] > summary["worst_case_tokens"]["output"]
    (budget,) = preview["budgets"]
    assert (budget["scope"], budget["period"], budget["remaining_usd"]) == ("organization", "day", "0.002000")
    assert preview["fits"] == {"expected": True, "worst_case": False}


def test_preview_counts_map_items_from_the_input(client: APIClient) -> None:
    definition = {
        "steps": [
            {
                "name": "each",
                "type": "map",
                "items": "{{ input.docs }}",
                "step": {"type": "llm", "model": "simulated-mini", "max_tokens": 10, "prompt": "{{ item }}"},
            }
        ]
    }
    workflow = _create(client, definition)
    url = f"/api/v1/workflows/{workflow['id']}/preview"
    three = client.post(url, {"input": {"docs": ["a", "b", "c"]}}, format="json").json()
    one = client.post(url, {"input": {"docs": ["z"]}}, format="json").json()
    unknown = client.post(url, {}, format="json").json()
    assert (three["steps"][0]["items"], one["steps"][0]["items"], unknown["steps"][0]["items"]) == (3, 1, None)
    assert Decimal(three["worst_case_usd"]) == 3 * Decimal(one["worst_case_usd"]) > 0
    assert any("one item" in note for note in unknown["assumptions"])


def test_events_stream_step_and_run_changes_until_the_run_ends(a: Organization, client: APIClient) -> None:
    run = _start(client, _create(client)["id"], {"text": "x"})
    _drive(a, run["id"])
    response = client.get(f"/api/v1/runs/{run['id']}/events")
    assert response["Content-Type"] == "text/event-stream"
    stream = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    events = [block.split("\n")[0] for block in stream.strip().split("\n\n")]
    assert events == ["event: step", "event: step", "event: run"]
    assert '"status": "succeeded"' in stream.split("event: run")[1]


def test_another_organizations_key_sees_none_of_its_workflows_or_runs(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    a, b = two_tenants
    client_a, client_b = api_client_for(a), api_client_for(b)
    workflow = _create(client_a)
    run = _start(client_a, workflow["id"], {"text": "x"})
    for method, url in [
        ("get", f"/api/v1/workflows/{workflow['id']}"),
        ("put", f"/api/v1/workflows/{workflow['id']}"),
        ("patch", f"/api/v1/workflows/{workflow['id']}"),
        ("get", f"/api/v1/workflows/{workflow['id']}/versions"),
        ("post", f"/api/v1/workflows/{workflow['id']}/preview"),
        ("post", f"/api/v1/workflows/{workflow['id']}/runs"),
        ("get", f"/api/v1/runs/{run['id']}"),
        ("post", f"/api/v1/runs/{run['id']}/cancel"),
        ("post", f"/api/v1/runs/{run['id']}/rerun"),
        ("get", f"/api/v1/runs/{run['id']}/events"),
    ]:
        response = getattr(client_b, method)(url, {"definition": EXAMPLE, "name": "x"}, format="json")
        assert response.status_code == 404, (method, url, response.content)
        assert response.json()["error"]["code"] == "not_found"
    assert client_b.get("/api/v1/workflows").json()["results"] == []
    assert client_b.get("/api/v1/runs").json()["results"] == []
    assert client_a.get(f"/api/v1/runs/{run['id']}").json()["status"] == "queued"  # B's cancel did nothing
    # B may use the same name: workflows live in each organization's own schema.
    assert _create(client_b)["name"] == "example"
