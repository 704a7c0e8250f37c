"""The template language: strict placeholders, JSON for non-strings, `??` fallbacks, no code."""

from __future__ import annotations

import pytest

from apps.workflows.templating import Scope, TemplateError, TemplateSyntaxError, template_parse

SCOPE = Scope(
    input={"text": "Bonjour", "n": 3, "doc": {"title": "T", "tags": ["a", "b"]}},
    outputs={"summary": "short", "meta": {"title": "Report", "pages": 12}, "nothing": None},
    skipped=frozenset({"branch"}),
)


def test_placeholders_are_replaced_with_strings_as_is_and_other_values_as_json() -> None:
    template = template_parse("{{input.text}} / {{ input.n }} / {{ steps.meta.output }} / {{ input.doc.tags.1 }}")
    assert template.render(SCOPE) == 'Bonjour / 3 / {"title": "Report", "pages": 12} / b'


def test_a_single_placeholder_resolves_to_the_value_itself() -> None:
    assert template_parse("  {{ input.doc.tags }} ").resolve(SCOPE) == ["a", "b"]
    assert template_parse("tags: {{ input.doc.tags }}").resolve(SCOPE) == 'tags: ["a", "b"]'


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ input.missing }}", "input has no field 'missing'"),
        ("{{ steps.meta.output.author }}", "steps.meta.output has no field 'author'"),
        ("{{ input.doc.tags.7 }}", "has 2 items, no item 7"),
        ("{{ input.text.length }}", "input.text is str, it has no field 'length'"),
        ("{{ steps.branch.output }}", "step 'branch' was skipped"),
        ("{{ steps.later.output }}", "step 'later' has no output"),
        ("{{ item }}", "unknown variable 'item'"),
    ],
)
def test_a_placeholder_that_does_not_resolve_is_an_error_not_an_empty_string(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        template_parse(f"x {source} y").render(SCOPE)


def test_fallbacks_take_the_first_alternative_that_exists_is_not_skipped_and_not_null() -> None:
    assert template_parse("{{ steps.branch.output ?? steps.summary.output }}").render(SCOPE) == "short"
    assert template_parse("{{ steps.nothing.output ?? input.text }}").render(SCOPE) == "Bonjour"
    assert template_parse('{{ steps.branch.output ?? "none" }}').render(SCOPE) == "none"
    assert template_parse("{{ steps.nothing.output }}").render(SCOPE) == "null"
    with pytest.raises(TemplateError, match="no alternative has a value"):
        template_parse("{{ steps.branch.output ?? input.nope }}").render(SCOPE)


def test_item_and_index_exist_inside_a_map_item_only() -> None:
    scope = SCOPE.with_item({"name": "x"}, 4)
    assert template_parse("{{ index }}: {{ item.name }}").render(scope) == "4: x"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("Hello {{ input.text", "unclosed placeholder"),
        ("{{ __import__('os').system('id') }}", "is not a variable path"),
        ("{{ input.text | upper }}", "is not a variable path"),
        ("{{ }}", "is not a variable path"),
        ('{{ "a" ?? input.text }}', "may only end a"),
        ('{{ "alone" }}', "may only end a"),
    ],
)
def test_anything_but_a_path_is_a_syntax_error(source: str, message: str) -> None:
    with pytest.raises(TemplateSyntaxError, match=message):
        template_parse(source)


def test_text_without_placeholders_is_kept_verbatim() -> None:
    text = 'JSON like {"a": {"b": 1}} and a single { brace }'
    assert template_parse(text).render(SCOPE) == text
