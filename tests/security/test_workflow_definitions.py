"""Issue 9, item 5: a workflow definition can't freeze or exhaust a worker (or a web process).

- YAML aliases are refused, so a 600-byte "billion laughs" is a fast 400, and sizes and nesting are
  checked on what parsing built, not only on the text; templates are parsed in linear time;
- `matches` patterns run on RE2 (linear time): `((a+))+$` over 100,000 characters takes
  milliseconds where Python's `re` backtracks for hours holding the GIL;
- what a step renders, and a transform's or a map's output, is bounded per step
  (`output_too_large`), and rendering stops at the bound;
- a map step fans out to at most the plan's `max_map_items` items, refused before any item runs.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest
from rest_framework.test import APIClient

from apps.billing.models import Plan
from apps.billing.selectors import entitlement
from apps.llm.models import UsageAttempt
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from apps.workflows.models import Workflow, WorkflowRun
from apps.workflows.steps import condition_test
from tests.conftest import ApiClientFor
from tests.workflows.factories import drive

# Nine lists of nine aliases of the list before: 9**9 (387 million) "lol"s, in 600-odd bytes.
BILLION_LAUGHS = "\n".join(
    [
        "description: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]",
        *(f"l{level}: &{chr(98 + level)} [" + ", ".join([f"*{chr(97 + level)}"] * 9) + "]" for level in range(8)),
        "steps: [{name: s, type: transform, template: '{{ input.x }}', depends_on: *i}]",
    ]
)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail instead of hanging: what is under test used to run for hours (the alarm interrupts
    Python code and `re`'s matching loop alike)."""

    def expired(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def a(two_tenants: tuple[Organization, Organization]) -> Organization:
    return two_tenants[0]


@pytest.fixture
def client(a: Organization, api_client_for: ApiClientFor) -> APIClient:
    return api_client_for(a)


def _refused(client: APIClient, definition: Any) -> dict[str, Any]:
    response = client.post("/api/v1/workflows", {"name": "hostile", "definition": definition}, format="json")
    assert response.status_code == 400, response.content
    error: dict[str, Any] = response.json()["error"]
    return error


def _create(client: APIClient, definition: Any) -> str:
    response = client.post("/api/v1/workflows", {"name": "wf", "definition": definition}, format="json")
    assert response.status_code == 201, response.content
    workflow_id: str = response.json()["id"]
    return workflow_id


def _run(client: APIClient, organization: Organization, workflow_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """Start a run through the API, run its steps as the workers would, and read it back."""
    started = client.post(f"/api/v1/workflows/{workflow_id}/runs", {"input": data}, format="json")
    assert started.status_code == 202, started.content
    with organization_schema(organization):
        drive(organization, WorkflowRun.objects.get(pk=started.json()["id"]))
    run: dict[str, Any] = client.get(f"/api/v1/runs/{started.json()['id']}").json()
    return run


def _ledger_rows(organization: Organization, run_id: str) -> int:
    with organization_schema(organization):
        return UsageAttempt.objects.filter(request_id__startswith=f"wf-{run_id.replace('-', '')}-").count()


# -- YAML and sizes -----------------------------------------------------------------------------------


def test_a_yaml_alias_bomb_gets_a_fast_400_naming_the_alias(a: Organization, client: APIClient) -> None:
    assert len(BILLION_LAUGHS) < 700
    started = time.monotonic()
    with deadline(10):
        error = _refused(client, BILLION_LAUGHS)
    assert time.monotonic() - started < 2
    assert (error["code"], error["param"]) == ("invalid_request", "definition.definition")
    assert error["message"] == "definition.definition: YAML aliases (*a) are not allowed at line 2, column 9"
    with organization_schema(a):
        assert not Workflow.objects.exists()


def test_yaml_merge_keys_need_aliases_and_are_refused_too(client: APIClient) -> None:
    text = "base: &base {type: transform}\nsteps:\n  - <<: *base\n    name: s\n    template: x\n"
    assert "YAML aliases (*base) are not allowed" in _refused(client, text)["message"]


def test_deep_nesting_is_a_400_in_yaml_and_in_a_json_definition(client: APIClient) -> None:
    with deadline(10):
        yaml_error = _refused(client, "steps: " + "[" * 50_000)
        json_error = _refused(
            client,
            {
                "steps": [{"name": "s", "type": "transform", "template": "x"}],
                "description": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
            },
        )
    assert "nested more than 32 levels deep" in yaml_error["message"]
    assert json_error["message"] == "definition.definition: the definition is nested more than 32 levels deep"


def test_sizes_are_checked_on_the_parsed_definition(client: APIClient) -> None:
    many = {"steps": [{"name": "s", "type": "transform", "template": "x"}], "description": [0] * 30_000}
    assert (
        _refused(client, many)["message"] == "definition.definition: the definition has more than 20000 values in all"
    )
    values = {"steps": [{"name": "s", "type": "transform", "template": "x"}], "description": "!!set {a, b}"}
    assert _create(client, values)  # a string that looks like a tag is just a string in JSON
    tagged = "steps: [{name: s, type: transform, template: x}]\ndescription: !!set {a, b}"
    assert _refused(client, tagged)["message"].startswith("definition.definition: a set is not a JSON value")


def test_a_template_of_unclosed_placeholders_is_refused_in_linear_time(client: APIClient) -> None:
    # A lazy `{{(.*?)}}` regex rescanned the rest of the text from every `{{`: 90 s for these 100,000.
    definition = {"steps": [{"name": "s", "type": "transform", "template": "{{" * 50_000}]}
    started = time.monotonic()
    with deadline(10):
        error = _refused(client, definition)
    assert time.monotonic() - started < 2
    assert error["message"].startswith("definition.steps[0].template: unclosed placeholder at '{{{{")


# -- patterns -----------------------------------------------------------------------------------------


def test_a_catastrophic_pattern_is_accepted_and_evaluates_in_milliseconds(a: Organization, client: APIClient) -> None:
    definition = {
        "steps": [
            {"name": "check", "type": "condition", "value": "{{ input.text }}", "matches": "((a+))+$", "then": "yes"},
            {"name": "yes", "type": "transform", "template": "matched"},
        ]
    }
    workflow_id = _create(client, definition)
    text = "a" * 99_999 + "b"  # Python's re tries every way to split the a's before failing at "b"
    with deadline(10):
        started = time.monotonic()
        assert condition_test({"matches": "((a+))+$"}, text) is False
        assert time.monotonic() - started < 0.5
        run = _run(client, a, workflow_id, {"text": text})
    check, yes = run["steps"]
    assert (run["status"], check["status"], check["output"], yes["status"]) == (
        "succeeded",
        "succeeded",
        False,
        "skipped",
    )
    assert check["duration_ms"] < 500


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (r"(a)\1", "invalid regular expression: invalid escape sequence: \\1"),  # backreference: backtracking
        ("(?=a)b", "invalid regular expression: invalid perl operator: (?="),  # lookahead
        ("([a-z", "invalid regular expression: missing ]: [a-z"),
        ("a" * 201, "a pattern is limited to 200 characters"),
    ],
)
def test_patterns_re2_cannot_run_are_a_400_at_their_location(client: APIClient, pattern: str, message: str) -> None:
    definition = {
        "steps": [
            {"name": "check", "type": "condition", "value": "{{ input.text }}", "matches": pattern, "then": "yes"},
            {"name": "yes", "type": "transform", "template": "matched"},
        ]
    }
    error = _refused(client, definition)
    assert error["param"] == "definition.steps[0].matches"
    assert error["message"] == f"definition.steps[0].matches: {message}"


# -- output bounds ------------------------------------------------------------------------------------


def test_a_transform_rendering_past_the_step_bound_fails_with_output_too_large(
    a: Organization, client: APIClient
) -> None:
    # 20 copies of a 100 KB input: 2 MB, past the default 1 MiB.
    definition = {"steps": [{"name": "big", "type": "transform", "template": "{{ input.t }}" * 20}]}
    run = _run(client, a, _create(client, definition), {"t": "x" * 100_000})
    (step,) = run["steps"]
    assert (run["status"], step["status"], step["output"]) == ("failed", "failed", None)
    assert step["error"] == {
        "class": "output_too_large",
        "message": "template: the rendered text is larger than the step limit of 1048576 bytes",
    }
    assert run["error"]["class"] == "output_too_large"


def test_a_jsonpath_output_repeating_its_value_past_the_bound_fails(
    a: Organization, client: APIClient, settings: Any
) -> None:
    settings.WORKFLOW_STEP_OUTPUT_MAX_BYTES = 10_000
    definition = {"steps": [{"name": "all", "type": "transform", "jsonpath": "$..*", "value": "{{ input.tree }}"}]}
    tree: Any = "x" * 2000
    for _ in range(8):  # `$..*` gives every level, each with all below it: 8 copies of the text
        tree = [tree]
    run = _run(client, a, _create(client, definition), {"tree": tree})
    assert run["steps"][0]["error"] == {
        "class": "output_too_large",
        "message": "the output is larger than the step limit of 10000 bytes",
    }


def test_an_llm_prompt_past_the_bound_fails_before_any_call(a: Organization, client: APIClient, settings: Any) -> None:
    settings.WORKFLOW_STEP_OUTPUT_MAX_BYTES = 50_000
    definition = {
        "steps": [
            {"name": "ask", "type": "llm", "model": "simulated-mini", "prompt": "{{ input.t }} " * 10},
        ]
    }
    run = _run(client, a, _create(client, definition), {"t": "y" * 10_000})
    (step,) = run["steps"]
    assert step["error"] == {
        "class": "output_too_large",
        "message": "prompt: the rendered text is larger than the step limit of 50000 bytes",
    }
    assert _ledger_rows(a, run["id"]) == 0  # nothing was priced or sent


def test_a_maps_outputs_together_are_bounded_and_the_rest_of_its_items_dont_run(
    a: Organization, client: APIClient, settings: Any
) -> None:
    settings.WORKFLOW_STEP_OUTPUT_MAX_BYTES = 10_000
    definition = {
        "steps": [
            {
                "name": "each",
                "type": "map",
                "items": "{{ input.items }}",
                "concurrency": 1,
                "step": {"type": "transform", "template": "{{ input.t }} {{ item }}"},
            }
        ]
    }
    run = _run(client, a, _create(client, definition), {"items": list(range(50)), "t": "z" * 3000})
    (step,) = run["steps"]
    assert step["error"]["class"] == "output_too_large"
    assert step["error"]["message"] == (
        "item 3: the items' outputs together is larger than the step limit of 10000 bytes"
    )
    assert step["items_done"] == 4  # the fourth item passed the bound; no later item ran


# -- map fan-out --------------------------------------------------------------------------------------

MAP = {
    "steps": [
        {
            "name": "each",
            "type": "map",
            "items": "{{ input.items }}",
            "step": {"type": "llm", "model": "simulated-mini", "max_tokens": 5, "prompt": "{{ item }}"},
        }
    ]
}


def test_a_map_over_more_items_than_the_plan_allows_fails_before_any_item_runs(
    a: Organization, client: APIClient
) -> None:
    assert a.plan.code == "suite" and entitlement(a, "map_items").limit == 100
    run = _run(client, a, _create(client, MAP), {"items": [f"item {n}" for n in range(101)]})
    (step,) = run["steps"]
    assert (run["status"], step["status"], step["items_done"]) == ("failed", "failed", 0)
    assert step["error"] == {
        "class": "map_too_large",
        "message": "items: 101 items, more than the plan's max_map_items of 100 for one map step",
    }
    assert _ledger_rows(a, run["id"]) == 0  # no item was called


def test_the_map_bound_is_the_plans(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    _, b = two_tenants
    b.plan = Plan.objects.get(code="pro")
    b.save(update_fields=["plan"])
    assert entitlement(b, "map_items").limit == 1000
    client = api_client_for(b)
    inner = {"type": "transform", "template": "{{ item }}!"}
    transform = {"steps": [{**MAP["steps"][0], "step": inner, "concurrency": 1}]}  # pool threads: own connections
    run = _run(client, b, _create(client, transform), {"items": list(range(101))})
    assert run["status"] == "succeeded", run["error"]
    assert run["output"] == [f"{n}!" for n in range(101)]


def test_the_cost_preview_shows_the_map_bound_instead_of_sizing_every_item(client: APIClient) -> None:
    url = f"/api/v1/workflows/{_create(client, MAP)}/preview"
    over = client.post(url, {"input": {"items": ["x"] * 5000}}, format="json")
    assert over.status_code == 200, over.content
    (step,) = over.json()["steps"]
    assert step["error"] == "map_too_large: 5000 items, more than the plan's max_map_items of 100"
    assert (step["items"], step["worst_case_usd"], over.json()["worst_case_usd"]) == (5000, "0E-8", "0E-8")
    within = client.post(url, {"input": {"items": ["x"] * 100}}, format="json").json()
    assert within["steps"][0]["items"] == 100 and "error" not in within["steps"][0]
