"""Parsing and validating definitions: every refusal names its exact location."""

from __future__ import annotations

from typing import Any

import pytest

from apps.workflows.definition import DefinitionInvalid, definition_parse

SUMMARY = {"name": "summary", "type": "llm", "model": "gpt-4o-mini", "prompt": "Summarize: {{ input.text }}"}
FRENCH = {
    "name": "french",
    "type": "llm",
    "policy": "cheapest",
    "prompt": "Translate to French: {{ steps.summary.output }}",
}


def _problem(raw: object) -> str:
    with pytest.raises(DefinitionInvalid) as refused:
        definition_parse(raw)
    return str(refused.value)


def test_the_issue_example_parses_with_dependencies_inferred_from_references() -> None:
    definition = definition_parse({"steps": [SUMMARY, FRENCH]})
    assert definition.names == ["summary", "french"]
    assert definition.step("summary").depends_on == frozenset()
    assert definition.step("french").depends_on == {"summary"}
    assert definition.step("french").required == (frozenset({"summary"}),)
    assert definition.output == "french"
    assert definition.inputs is None


def test_yaml_text_gives_the_same_definition_as_json() -> None:
    text = """
inputs: [text]
output: summary
steps:
  - name: summary
    type: llm
    model: gpt-4o-mini
    prompt: "Summarize: {{ input.text }}"
  - name: french
    type: llm
    policy: cheapest
    prompt: "Translate to French: {{ steps.summary.output }}"
"""
    definition = definition_parse(text)
    assert definition.names == ["summary", "french"]
    assert (definition.output, definition.inputs) == ("summary", ("text",))
    assert definition.step("french").config == FRENCH


def test_broken_yaml_is_refused_with_its_line() -> None:
    assert _problem("steps:\n  - name: a\n    prompt: [unclosed\n").startswith("definition: invalid YAML at line 4")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"steps": [SUMMARY, {**FRENCH, "prompt": "{{ steps.summry.output }}"}]},
            "steps[1].prompt: unknown step 'summry' in {{ steps.summry.output }}",
        ),
        ({"steps": [{**SUMMARY, "type": "llmm"}]}, "steps[0].type: unknown step type 'llmm'; use one of llm, retrieve"),
        ({"steps": [{"name": "a", "prompt": "x"}]}, "steps[0].type: missing field"),
        ({"steps": [{"type": "llm", "model": "m", "prompt": "x"}]}, "steps[0].name: missing field"),
        ({"steps": [{**SUMMARY, "name": "has space"}]}, "steps[0].name: 'has space' is not a step name"),
        ({"steps": [SUMMARY, SUMMARY]}, "steps[1].name: duplicate step name 'summary' (also steps[0])"),
        ({"steps": [{**SUMMARY, "prompt": None}]}, "steps[0].prompt: missing field"),
        ({"steps": [{**SUMMARY, "promt": "typo"}]}, "steps[0].promt: unknown field for llm steps"),
        ({"steps": [{"name": "a", "type": "llm", "prompt": "x"}]}, "steps[0]: an llm step needs a `model`"),
        ({"steps": [{**SUMMARY, "policy": "cheapest"}]}, "steps[0].policy: give `model` or `policy`, not both"),
        ({"steps": [{**SUMMARY, "max_tokens": 0}]}, "steps[0].max_tokens: must be an integer from 1 to 1000000"),
        ({"steps": [{**SUMMARY, "temperature": 3}]}, "steps[0].temperature: must be a number from 0 to 2"),
        ({"steps": [{**SUMMARY, "prompt": "{{ input.text"}]}, "steps[0].prompt: unclosed placeholder"),
        ({"steps": [{**SUMMARY, "prompt": "{{ item }}"}]}, "steps[0].prompt: `item` exists only inside a map"),
        ({"steps": [{**SUMMARY, "prompt": "{{ secrets.key }}"}]}, "steps[0].prompt: unknown variable 'secrets'"),
        (
            {"steps": [SUMMARY, {**FRENCH, "prompt": "{{ steps.summary }}"}]},
            "steps[1].prompt: refer to the step's result as steps.summary.output",
        ),
        ({"inputs": ["doc"], "steps": [SUMMARY]}, "steps[0].prompt: unknown input 'text' (declared inputs: doc)"),
        ({"steps": [SUMMARY], "output": "nope"}, "output: unknown step 'nope'"),
        ({"steps": []}, "steps: give a non-empty list of steps"),
        ({"stepz": [SUMMARY]}, "stepz: unknown field"),
        ("just text", "definition: a definition is an object"),
        ({"steps": [SUMMARY, {**FRENCH, "depends_on": ["ghost"]}]}, "steps[1].depends_on: unknown step 'ghost'"),
    ],
)
def test_invalid_definitions_name_the_exact_location(raw: object, expected: str) -> None:
    assert _problem(raw).startswith(expected), _problem(raw)


def test_a_cycle_is_reported_with_its_path() -> None:
    steps = [
        {**SUMMARY, "prompt": "{{ input.text }} {{ steps.french.output }}"},
        FRENCH,
        {"name": "other", "type": "transform", "template": "{{ input.text }}"},
    ]
    assert _problem({"steps": steps}) == "steps[0]: cycle summary -> french -> summary"
    self_loop = {"steps": [{**SUMMARY, "prompt": "{{ steps.summary.output }}"}]}
    assert _problem(self_loop) == "steps[0]: cycle summary -> summary"
    three = [
        {"name": "a", "type": "transform", "template": "{{ steps.c.output }}"},
        {"name": "b", "type": "transform", "template": "{{ steps.a.output }}"},
        {"name": "c", "type": "transform", "template": "{{ steps.b.output }}"},
    ]
    assert _problem({"steps": three}) == "steps[0]: cycle a -> b -> c -> a"


def test_every_problem_is_listed_not_only_the_first() -> None:
    with pytest.raises(DefinitionInvalid) as refused:
        definition_parse({"steps": [{**SUMMARY, "model": 5, "max_tokens": -1}, {**FRENCH, "type": "nope"}]})
    locations = [problem.location for problem in refused.value.problems]
    assert locations == ["steps[0].model", "steps[0].max_tokens", "steps[1].type"]


def _condition_definition() -> dict[str, Any]:
    return {
        "steps": [
            {
                "name": "check",
                "type": "condition",
                "value": "{{ input.lang }}",
                "equals": "fr",
                "then": "fr",
                "else": ["en"],
            },
            {"name": "fr", "type": "transform", "template": "Bonjour {{ input.name }}"},
            {"name": "en", "type": "transform", "template": "Hello {{ input.name }}"},
            {"name": "final", "type": "transform", "template": "{{ steps.fr.output ?? steps.en.output }}"},
        ]
    }


def test_branch_steps_depend_on_their_condition_and_a_join_needs_one_of_its_alternatives() -> None:
    definition = definition_parse(_condition_definition())
    assert definition.step("fr").branches == (("check", True),)
    assert definition.step("en").branches == (("check", False),)
    assert definition.step("fr").depends_on == {"check"}
    final = definition.step("final")
    assert final.depends_on == {"fr", "en"}
    assert final.required == (frozenset({"fr", "en"}),)  # skipped only if both are


def test_condition_checks() -> None:
    base = _condition_definition()
    check = base["steps"][0]
    assert _problem({**base, "steps": [{**check, "then": "ghost"}, *base["steps"][1:]]}).startswith(
        "steps[0].then: unknown step 'ghost'"
    )
    assert _problem({**base, "steps": [{**check, "else": "fr"}, *base["steps"][1:]]}).startswith(
        "steps[0].else: step 'fr' is on both branches"
    )
    no_test = {k: v for k, v in check.items() if k != "equals"}
    assert _problem({**base, "steps": [no_test, *base["steps"][1:]]}).startswith(
        "steps[0]: a condition step needs one test"
    )
    nested = {**no_test, "matches": "(a+)+$"}  # harmless under RE2, which never backtracks
    assert definition_parse({**base, "steps": [nested, *base["steps"][1:]]}).steps[0].config["matches"] == "(a+)+$"
    bad = {**no_test, "matches": "([a-z"}
    assert _problem({**base, "steps": [bad, *base["steps"][1:]]}) == (
        "steps[0].matches: invalid regular expression: missing ]: [a-z"
    )
    backreference = {**no_test, "matches": r"(a)\1"}  # needs backtracking: RE2 refuses it
    assert _problem({**base, "steps": [backreference, *base["steps"][1:]]}).startswith(
        "steps[0].matches: invalid regular expression: invalid escape sequence"
    )
    # A branch step feeding its own condition is a cycle.
    loop = {**check, "value": "{{ steps.fr.output }}"}
    assert "cycle" in _problem({**base, "steps": [loop, *base["steps"][1:]]})


def test_map_steps_run_an_inner_step_that_sees_item_and_depend_on_what_both_reference() -> None:
    definition = definition_parse(
        {
            "steps": [
                {"name": "split", "type": "transform", "jsonpath": "$.docs[*]", "value": "{{ input.payload }}"},
                {
                    "name": "each",
                    "type": "map",
                    "items": "{{ steps.split.output }}",
                    "concurrency": 3,
                    "step": {
                        "type": "llm",
                        "model": "m",
                        "prompt": "{{ index }}: {{ item.text }} ({{ steps.lang.output }})",
                    },
                },
                {"name": "lang", "type": "transform", "template": "fr"},
            ]
        }
    )
    each = definition.step("each")
    assert each.depends_on == {"split", "lang"}
    assert each.inner is not None and each.inner.type == "llm"
    assert "prompt" in each.inner.templates


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (
            {"items": "list: {{ input.xs }}", "step": {"type": "transform", "template": "x"}},
            "steps[0].items: must be one placeholder",
        ),
        ({"items": "{{ input.xs }}"}, "steps[0].step: missing field"),
        (
            {"items": "{{ input.xs }}", "step": {"type": "map", "items": "x"}},
            "steps[0].step.type: a map step can't run a 'map' step",
        ),
        ({"items": "{{ input.xs }}", "step": {"type": "llm", "model": "m"}}, "steps[0].step.prompt: missing field"),
        (
            {"items": "{{ input.xs }}", "step": {"type": "llm", "model": "m", "prompt": "x", "name": "n"}},
            "steps[0].step.name: unknown field",
        ),
        (
            {"items": "{{ input.xs }}", "concurrency": 99, "step": {"type": "transform", "template": "x"}},
            "steps[0].concurrency: must be an integer from 1 to 16",
        ),
    ],
)
def test_map_step_problems(step: dict[str, Any], expected: str) -> None:
    assert _problem({"steps": [{"name": "m", "type": "map", **step}]}).startswith(expected)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ({"type": "transform"}, "steps[0]: a transform step needs a `template`, or a `jsonpath`"),
        ({"type": "transform", "jsonpath": "$.[", "value": "{{ input.x }}"}, "steps[0].jsonpath: invalid JSONPath"),
        ({"type": "transform", "jsonpath": "$.a"}, "steps[0].value: missing field"),
        ({"type": "retrieve", "query": "q", "top_k": 500}, "steps[0].top_k: must be an integer from 1 to 50"),
        ({"type": "retrieve"}, "steps[0].query: missing field"),
        ({"type": "http", "url": "ftp://example.com"}, "steps[0].url: must start with http:// or https://"),
        ({"type": "http", "url": "https://example.com", "method": "TRACE"}, "steps[0].method: use one of GET"),
        ({"type": "http", "url": "https://example.com", "headers": {"X": 1}}, "steps[0].headers: give an object"),
        (
            {"type": "http", "url": "https://example.com", "body": {"a": ["{{ steps.zz.output }}"]}},
            "steps[0].body.a.0: unknown step 'zz'",
        ),
        (
            {"type": "http", "url": "https://example.com", "headers": {"Authorization": "Bearer {{ input.tok"}},
            "steps[0].headers.Authorization: unclosed",
        ),
    ],
)
def test_other_step_type_problems(step: dict[str, Any], expected: str) -> None:
    assert _problem({"steps": [{"name": "s", **step}]}).startswith(expected)


def test_downstream_follows_dependencies_transitively() -> None:
    definition = definition_parse(
        {
            "steps": [
                SUMMARY,
                FRENCH,
                {"name": "shout", "type": "transform", "template": "{{ steps.french.output }}!"},
                {"name": "alone", "type": "transform", "template": "{{ input.text }}"},
            ]
        }
    )
    assert definition.downstream(["french"]) == {"french", "shout"}
    assert definition.downstream(["summary"]) == {"summary", "french", "shout"}
