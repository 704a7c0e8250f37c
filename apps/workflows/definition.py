"""Workflow definitions: parse (JSON object or YAML text) and validate, with no database.

    inputs: [text]                # optional: the run's input fields; references to others are refused
    output: french                # optional: the step whose output is the run's output (default: the last)
    steps:
      - name: summary
        type: llm
        model: gpt-4o-mini
        prompt: "Summarize: {{ input.text }}"
      - name: french
        type: llm
        policy: cheapest
        prompt: "Translate to French: {{ steps.summary.output }}"

A step runs once every step it depends on has finished: the steps its templates reference
(`{{ steps.x.output }}`), the ones named in `depends_on`, and the `condition` whose branch it is on.
Every problem is reported with its location (`steps[1].prompt: unknown step 'summry' in ...`).
Which models and agents exist is checked by the service, which can read the catalog.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import re2
import yaml
from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext.parser import parse as jsonpath_parse

from apps.workflows.templating import Reference, Template, TemplateSyntaxError, template_parse
from cognitionos.refusals import Refusal

STEP_TYPES = ("llm", "retrieve", "transform", "condition", "map", "http")
INNER_TYPES = ("llm", "retrieve", "transform", "http")  # what a map step can run per item
POLICIES = ("cheapest", "fastest", "balanced")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_STEPS = 100
MAX_CONCURRENCY = 16
MAX_TOP_K = 50  # apps.knowledge.search's bound
RETRIEVE_MODES = ("hybrid", "vector", "text")
MAX_PATTERN_CHARS = 200
# Bounds on a definition, checked on the text before parsing and on what parsing built: a few
# hundred bytes of YAML or JSON must not become a structure that takes a worker's memory or stack.
MAX_DEFINITION_BYTES = 256 * 1024
MAX_DEFINITION_DEPTH = 32
MAX_DEFINITION_NODES = 20_000
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

_COMMON = frozenset({"name", "type", "depends_on", "description"})
_FIELDS: dict[str, frozenset[str]] = {
    "llm": frozenset(
        {"prompt", "system", "agent", "model", "policy", "max_tokens", "temperature", "max_cost_usd", "min_quality"}
    ),
    # `documents` (document ids): definitions saved before knowledge bases still parse and run;
    # definition_check refuses it in a definition saved now.
    "retrieve": frozenset({"query", "top_k", "knowledge_base", "mode", "documents"}),
    "transform": frozenset({"template", "jsonpath", "value", "first"}),
    "condition": frozenset({"value", "equals", "contains", "matches", "then", "else"}),
    "map": frozenset({"items", "step", "concurrency"}),
    "http": frozenset({"url", "method", "headers", "body", "timeout_s"}),
}
_TEMPLATE_FIELDS = {
    "llm": ("prompt", "system"),
    "retrieve": ("query",),
    "transform": ("template", "value"),
    "condition": ("value",),
    "map": ("items",),
    "http": ("url",),
}


@dataclass(frozen=True)
class Problem:
    location: str  # `steps[1].prompt`, `output`, `definition`
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class DefinitionInvalid(Refusal, ValueError):
    """The definition is refused; `problems` lists every problem found, the first one is the message.
    A request gives its definition in the field `definition`: the API locates problems in it
    (`definition.steps[1].prompt`) and lists them all in `details`."""

    code = "invalid_request"

    def __init__(self, problems: list[Problem]) -> None:
        assert problems
        self.problems = problems
        super().__init__(str(problems[0]))
        by_location: dict[str, list[str]] = {}
        for problem in problems:  # one message per location, the last found (as a form's errors)
            by_location[problem.location] = [problem.message]
        self.by_location = by_location
        self.details = {"definition": by_location}
        self.param = f"definition.{problems[0].location}"

    def request_message(self) -> str:
        return f"{self.param}: {self.by_location[self.problems[0].location][0]}"

    @property
    def location(self) -> str:
        return self.problems[0].location


@dataclass(frozen=True)
class StepSpec:
    index: int
    name: str
    type: str
    config: Mapping[str, Any]  # the step as written
    templates: Mapping[str, Template]  # by field path: `prompt`, `headers.Authorization`, `body.a.b`
    depends_on: frozenset[str] = frozenset()
    # Skip this step if every step of one of these groups was skipped (what it can't run without).
    required: tuple[frozenset[str], ...] = ()
    # Conditions that must have taken a branch for this step to run: (condition step, then-branch?).
    branches: tuple[tuple[str, bool], ...] = ()
    inner: StepSpec | None = None  # a map step's per-item step

    @property
    def location(self) -> str:
        return f"steps[{self.index}]"

    def template(self, name: str) -> Template | None:
        return self.templates.get(name)


@dataclass(frozen=True)
class Definition:
    steps: tuple[StepSpec, ...]
    output: str
    inputs: tuple[str, ...] | None
    source: Mapping[str, Any] = field(repr=False)

    def step(self, name: str) -> StepSpec:
        return next(step for step in self.steps if step.name == name)

    @property
    def names(self) -> list[str]:
        return [step.name for step in self.steps]

    def downstream(self, names: Iterable[str]) -> set[str]:
        """`names` and every step that depends on them, directly or not."""
        found = set(names)
        changed = True
        while changed:
            changed = False
            for step in self.steps:
                if step.name not in found and step.depends_on & found:
                    found.add(step.name)
                    changed = True
        return found


class _Refused(yaml.YAMLError):
    """Valid YAML this loader won't build; the message says what and where."""


def _at(mark: Any) -> str:  # Any: the stubs give pure-Python and libyaml marks different types
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


class _Loader(yaml.SafeLoader):
    """SafeLoader without aliases and with bounded nesting. An alias (`*name`) repeats a node
    without repeating its text, so nested aliases expand a few hundred bytes into gigabytes (the
    "billion laughs"); the composer also recurses once per level of nesting."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(f"YAML aliases (*{event.anchor}) are not allowed{_at(event.start_mark)}")
        if self._depth >= MAX_DEFINITION_DEPTH:
            raise _Refused(f"nested more than {MAX_DEFINITION_DEPTH} levels deep{_at(event.start_mark)}")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _scalar_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node))


# A definition is JSON: YAML's dates and binary stay the text they were written as.
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _scalar_text)
_Loader.add_constructor("tag:yaml.org,2002:binary", _scalar_text)


def _yaml_load(text: str) -> object:
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _size_problem(value: object) -> str | None:
    """What is too large (nesting, the number of values, the characters of keys and strings
    together) or not JSON in a parsed definition, found walking it without recursion."""
    nodes = chars = 0
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        nodes += 1
        if depth > MAX_DEFINITION_DEPTH:
            return f"the definition is nested more than {MAX_DEFINITION_DEPTH} levels deep"
        if nodes > MAX_DEFINITION_NODES:
            return f"the definition has more than {MAX_DEFINITION_NODES} values in all"
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                chars += len(str(key))
                pending.append((child, depth + 1))
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
        elif isinstance(item, float) and not math.isfinite(item):
            return f"{item} is not a JSON number"
        elif not (item is None or isinstance(item, bool | int | float)):
            return f"a {type(item).__name__} is not a JSON value (use strings, numbers, lists and objects)"
        if chars > MAX_DEFINITION_BYTES:
            return f"the definition's strings add up to more than {MAX_DEFINITION_BYTES} characters"
    return None


def definition_load(raw: object) -> dict[str, Any]:
    """The definition as a JSON object: a dict as given, or YAML (or JSON) text parsed safely (no
    aliases), and in both cases no larger or deeper than the bounds above."""
    if isinstance(raw, str):
        if len(raw) > MAX_DEFINITION_BYTES:
            raise DefinitionInvalid([Problem("definition", f"a definition is limited to {MAX_DEFINITION_BYTES} bytes")])
        try:
            loaded = _yaml_load(raw)
        except _Refused as error:
            raise DefinitionInvalid([Problem("definition", str(error))]) from error
        except yaml.YAMLError as error:
            where = _at(getattr(error, "problem_mark", None))
            problem = getattr(error, "problem", None) or "not valid YAML"
            raise DefinitionInvalid([Problem("definition", f"invalid YAML{where}: {problem}")]) from error
        raw = loaded
    if not isinstance(raw, dict):
        raise DefinitionInvalid([Problem("definition", "a definition is an object with a `steps` list")])
    problem = _size_problem(raw)
    if problem is not None:
        raise DefinitionInvalid([Problem("definition", problem)])
    return raw


def definition_parse(raw: object) -> Definition:
    """Parse and validate; raises DefinitionInvalid listing every problem found."""
    return _Checker(definition_load(raw)).definition()


def pattern_compile(pattern: str) -> re2._Regexp:
    """A condition's `matches` pattern, compiled by RE2: matching takes time linear in the text
    whatever the pattern, as RE2 never backtracks. Python's `re` must never see a user's pattern:
    it can backtrack for hours holding the GIL, stalling every thread of the worker. What RE2 can't
    run in linear time (backreferences, lookaround) it refuses as invalid. The re2 module caches
    compiled patterns."""
    return re2.compile(pattern, _RE2_OPTIONS)


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is the user's error, reported to them, not logged
    return options


_RE2_OPTIONS = _re2_options()


def _re2_message(error: re2.error) -> str:
    message = error.args[0] if error.args else str(error)
    return message.decode(errors="replace") if isinstance(message, bytes) else str(message)


_KINDS = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}


def _kind(value: object) -> str:
    return "null" if value is None else _KINDS.get(type(value), type(value).__name__)


class _Checker:
    def __init__(self, source: dict[str, Any]) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.names: dict[str, int] = {}
        self.inputs: tuple[str, ...] | None = None

    def problem(self, location: str, message: str) -> None:
        self.problems.append(Problem(location, message))

    # -- the whole definition ------------------------------------------------------------------------

    def definition(self) -> Definition:
        for key in self.source:
            if key not in ("steps", "inputs", "output", "description"):
                self.problem(str(key), "unknown field; a definition has steps, inputs, output and description")
        self.inputs = self._inputs(self.source.get("inputs"))
        raw_steps = self.source.get("steps")
        if not isinstance(raw_steps, list) or not raw_steps:
            self.problem("steps", "give a non-empty list of steps")
            raise DefinitionInvalid(self.problems)
        if len(raw_steps) > MAX_STEPS:
            self.problem("steps", f"at most {MAX_STEPS} steps")
            raise DefinitionInvalid(self.problems)
        self._names(raw_steps)
        steps = [self._step(index, raw) for index, raw in enumerate(raw_steps)]
        parsed = [step for step in steps if step is not None]
        if len(parsed) == len(steps):
            parsed = self._with_branches(parsed)
            self._cycles(parsed)
        output = self.source.get("output")
        if output is None:
            output = parsed[-1].name if parsed else ""
        elif not isinstance(output, str) or output not in self.names:
            self.problem("output", f"unknown step {output!r}; name the step whose output is the run's output")
        if self.problems:
            raise DefinitionInvalid(self.problems)
        return Definition(steps=tuple(parsed), output=output, inputs=self.inputs, source=self.source)

    def _inputs(self, raw: object) -> tuple[str, ...] | None:
        if raw is None:
            return None
        if not isinstance(raw, list):
            self.problem("inputs", "give a list of input names, like [text, language]")
            return None
        names: list[str] = []
        for index, name in enumerate(raw):
            if not isinstance(name, str) or not NAME.fullmatch(name):
                self.problem(f"inputs[{index}]", "an input name is a letter or _ then letters, digits or _")
            elif name in names:
                self.problem(f"inputs[{index}]", f"duplicate input {name!r}")
            else:
                names.append(name)
        return tuple(names)

    def _names(self, raw_steps: list[Any]) -> None:
        for index, raw in enumerate(raw_steps):
            name = raw.get("name") if isinstance(raw, dict) else None
            if not isinstance(name, str):
                continue
            if name in self.names:
                self.problem(f"steps[{index}].name", f"duplicate step name {name!r} (also steps[{self.names[name]}])")
            else:
                self.names[name] = index

    # -- one step ------------------------------------------------------------------------------------

    def _step(self, index: int, raw: object, *, inner_of: str | None = None) -> StepSpec | None:
        where = f"{inner_of}.step" if inner_of else f"steps[{index}]"
        if not isinstance(raw, dict):
            self.problem(where, f"a step is an object with a name and a type, not {_kind(raw)}")
            return None
        before = len(self.problems)
        name = raw.get("name")
        if inner_of is None:
            if name is None:
                self.problem(f"{where}.name", "missing field: every step needs a name")
            elif not isinstance(name, str) or not NAME.fullmatch(name):
                self.problem(
                    f"{where}.name", f"{name!r} is not a step name (a letter or _ then up to 63 letters, digits or _)"
                )
        step_type = raw.get("type")
        types = INNER_TYPES if inner_of else STEP_TYPES
        if step_type is None:
            self.problem(f"{where}.type", f"missing field: give a type among {', '.join(types)}")
            return None
        if step_type not in types:
            what = f"a map step can't run a {step_type!r} step" if step_type in STEP_TYPES else "unknown step type"
            if what == "unknown step type":
                what = f"unknown step type {step_type!r}"
            self.problem(f"{where}.type", f"{what}; use one of {', '.join(types)}")
            return None
        allowed = _FIELDS[step_type] | (frozenset({"type"}) if inner_of else _COMMON)
        for key in raw:
            if key not in allowed:
                self.problem(f"{where}.{key}", f"unknown field for {step_type} steps")
        getattr(self, f"_check_{step_type}")(where, raw)
        templates = self._templates(where, step_type, raw, in_map=inner_of is not None)
        inner = None
        if step_type == "map" and isinstance(raw.get("step"), dict):
            inner = self._step(index, raw["step"], inner_of=where)
        if len(self.problems) > before:
            return None
        if inner_of:
            return StepSpec(index=index, name="", type=step_type, config=raw, templates=templates)
        assert isinstance(name, str)
        depends_on, required = self._dependencies(
            where, raw, [*templates.values(), *(inner.templates.values() if inner else ())]
        )
        return StepSpec(
            index=index,
            name=name,
            type=step_type,
            config=raw,
            templates=templates,
            depends_on=depends_on,
            required=required,
            inner=inner,
        )

    def _dependencies(
        self, where: str, raw: dict[str, Any], templates: list[Template]
    ) -> tuple[frozenset[str], tuple[frozenset[str], ...]]:
        """The steps this one waits for, and the groups it can't run without (all skipped: skip it)."""
        explicit = self._depends_on(where, raw.get("depends_on"))
        referenced: set[str] = set()
        required: list[frozenset[str]] = [frozenset({name}) for name in explicit]
        for template in templates:
            for placeholder in template.placeholders:
                steps = {ref.path[1] for ref in placeholder.references if ref.path[0] == "steps" and len(ref.path) > 1}
                referenced |= steps
                only_steps = all(
                    isinstance(alt, Reference) and alt.path[0] == "steps" for alt in placeholder.alternatives
                )
                if steps and only_steps:
                    required.append(frozenset(steps))
        return frozenset(explicit) | frozenset(referenced), tuple(dict.fromkeys(required))

    def _depends_on(self, where: str, raw: object) -> list[str]:
        if raw is None:
            return []
        names = [raw] if isinstance(raw, str) else raw
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            self.problem(f"{where}.depends_on", "give a step name or a list of step names")
            return []
        for name in names:
            if name not in self.names:
                self.problem(f"{where}.depends_on", f"unknown step {name!r}")
        return [name for name in names if name in self.names]

    def _templates(self, where: str, step_type: str, raw: dict[str, Any], *, in_map: bool) -> dict[str, Template]:
        found: dict[str, str] = {}
        for name in _TEMPLATE_FIELDS[step_type]:
            if isinstance(raw.get(name), str):
                found[name] = raw[name]
        if step_type == "http":
            headers = raw.get("headers")
            if isinstance(headers, dict):
                for header, value in headers.items():
                    if isinstance(value, str):
                        found[f"headers.{header}"] = value
            self._json_strings(raw.get("body"), "body", found)
        parsed: dict[str, Template] = {}
        for path, text in found.items():
            template = self._template(f"{where}.{path}", text, in_map=in_map)
            if template is not None:
                parsed[path] = template
        return parsed

    def _json_strings(self, value: object, path: str, found: dict[str, Any]) -> None:
        if isinstance(value, str):
            found[path] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                self._json_strings(item, f"{path}.{key}", found)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self._json_strings(item, f"{path}.{index}", found)

    def _template(self, location: str, text: str, *, in_map: bool) -> Template | None:
        try:
            template = template_parse(text)
        except TemplateSyntaxError as error:
            self.problem(location, str(error))
            return None
        ok = True
        for placeholder in template.placeholders:
            for reference in placeholder.references:
                message = self._reference_problem(reference, in_map=in_map)
                if message is not None:
                    self.problem(location, f"{message} in {placeholder.source}")
                    ok = False
        return template if ok else None

    def _reference_problem(self, reference: Reference, *, in_map: bool) -> str | None:  # noqa: PLR0911
        root, *rest = reference.path
        if root == "input":
            if rest and self.inputs is not None and rest[0] not in self.inputs:
                declared = ", ".join(self.inputs) or "none"
                return f"unknown input {rest[0]!r} (declared inputs: {declared})"
            return None
        if root == "steps":
            if not rest:
                return "name a step: steps.<name>.output"
            if rest[0] not in self.names:
                return f"unknown step {rest[0]!r}"
            if len(rest) < 2 or rest[1] != "output":
                return f"refer to the step's result as steps.{rest[0]}.output"
            return None
        if root in ("item", "index"):
            if not in_map:
                return f"`{root}` exists only inside a map step's `step`"
            if root == "index" and rest:
                return "`index` is a number; it has no fields"
            return None
        return f"unknown variable {root!r} (use input, steps, or item inside a map)"

    # -- fields of each step type --------------------------------------------------------------------

    def _text(self, where: str, raw: dict[str, Any], name: str, *, required: bool = False) -> None:
        value = raw.get(name)
        if value is None:
            if required:
                self.problem(f"{where}.{name}", "missing field")
        elif not isinstance(value, str) or (required and not value.strip()):
            self.problem(f"{where}.{name}", f"must be a non-empty string, not {_kind(value)}")

    def _integer(self, where: str, raw: dict[str, Any], name: str, low: int, high: int) -> None:
        value = raw.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high):
            self.problem(f"{where}.{name}", f"must be an integer from {low} to {high}")

    def _number(self, where: str, raw: dict[str, Any], name: str, low: float, high: float | None) -> None:
        value = raw.get(name)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float) or value < low or (high and value > high):
            bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
            self.problem(f"{where}.{name}", f"must be a number {bound}")

    def _check_llm(self, where: str, raw: dict[str, Any]) -> None:
        self._text(where, raw, "prompt", required=True)
        self._text(where, raw, "system")
        for name in ("agent", "model"):
            self._text(where, raw, name)
        policy = raw.get("policy")
        if policy is not None and policy not in POLICIES:
            self.problem(f"{where}.policy", f"unknown policy {policy!r}; use one of {', '.join(POLICIES)}")
        if not {"agent", "model", "policy"} & raw.keys():
            self.problem(where, "an llm step needs a `model`, a routing `policy` or an `agent`")
        if "model" in raw and "policy" in raw:
            self.problem(f"{where}.policy", "give `model` or `policy`, not both")
        self._integer(where, raw, "max_tokens", 1, 1_000_000)
        self._integer(where, raw, "min_quality", 1, 5)
        self._number(where, raw, "temperature", 0, 2)
        self._number(where, raw, "max_cost_usd", 0, None)

    def _check_retrieve(self, where: str, raw: dict[str, Any]) -> None:
        self._text(where, raw, "query", required=True)
        self._integer(where, raw, "top_k", 1, MAX_TOP_K)
        # Required of a definition saved now (definition_check, which also finds it): its id or name.
        reference = raw.get("knowledge_base")
        if reference is not None and (not isinstance(reference, str) or not reference.strip() or len(reference) > 100):
            self.problem(f"{where}.knowledge_base", "give a knowledge base's id or name (at most 100 characters)")
        mode = raw.get("mode")
        if mode is not None and mode not in RETRIEVE_MODES:
            self.problem(f"{where}.mode", f"unknown mode {mode!r}; use one of {', '.join(RETRIEVE_MODES)}")
        documents = raw.get("documents")
        if documents is not None and (
            not isinstance(documents, list)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in documents)
        ):
            self.problem(f"{where}.documents", "give a list of document ids")

    def _check_transform(self, where: str, raw: dict[str, Any]) -> None:
        if ("template" in raw) == ("jsonpath" in raw):
            self.problem(where, "a transform step needs a `template`, or a `jsonpath` over a `value` (one of them)")
        self._text(where, raw, "template")
        if "jsonpath" in raw:
            expression = raw["jsonpath"]
            if not isinstance(expression, str) or not expression.strip():
                self.problem(f"{where}.jsonpath", "must be a JSONPath expression like $.items[*].name")
            else:
                try:
                    jsonpath_parse(expression)
                except JSONPathError as error:
                    self.problem(f"{where}.jsonpath", f"invalid JSONPath: {error}")
            self._text(where, raw, "value", required=True)
        elif "value" in raw:
            self.problem(f"{where}.value", "`value` goes with `jsonpath`")
        if "first" in raw and not isinstance(raw["first"], bool):
            self.problem(f"{where}.first", "must be true or false")

    def _check_condition(self, where: str, raw: dict[str, Any]) -> None:
        self._text(where, raw, "value", required=True)
        tests = [name for name in ("equals", "contains", "matches") if name in raw]
        if len(tests) != 1:
            self.problem(where, "a condition step needs one test: `equals`, `contains` or `matches`")
        pattern = raw.get("matches")
        if "matches" in raw:
            if not isinstance(pattern, str):
                self.problem(f"{where}.matches", "must be a regular expression (a string)")
            elif len(pattern) > MAX_PATTERN_CHARS:
                self.problem(f"{where}.matches", f"a pattern is limited to {MAX_PATTERN_CHARS} characters")
            else:
                try:
                    pattern_compile(pattern)
                except re2.error as error:
                    self.problem(f"{where}.matches", f"invalid regular expression: {_re2_message(error)}")
        self._branches(where, raw)

    def _branches(self, where: str, raw: dict[str, Any]) -> None:
        if "then" not in raw and "else" not in raw:
            self.problem(where, "a condition step needs `then` and/or `else`: the steps each branch runs")
        own = raw.get("name")
        seen: dict[str, str] = {}
        for branch in ("then", "else"):
            names = raw.get(branch)
            if names is None:
                continue
            names = [names] if isinstance(names, str) else names
            if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
                self.problem(f"{where}.{branch}", "give a step name or a list of step names")
                continue
            for name in names:
                if name not in self.names:
                    self.problem(f"{where}.{branch}", f"unknown step {name!r}")
                elif name == own:
                    self.problem(f"{where}.{branch}", "a condition can't be on its own branch")
                elif name in seen and seen[name] != branch:
                    self.problem(f"{where}.{branch}", f"step {name!r} is on both branches")
                seen[name] = branch

    def _check_map(self, where: str, raw: dict[str, Any]) -> None:
        self._text(where, raw, "items", required=True)
        items = raw.get("items")
        if isinstance(items, str):
            try:
                single = template_parse(items).single
            except TemplateSyntaxError:
                single = True  # type: ignore[assignment]  # reported with the templates
            if single is None:
                self.problem(f"{where}.items", "must be one placeholder giving a list, like {{ input.documents }}")
        if "step" not in raw:
            self.problem(f"{where}.step", "missing field: the step to run for each item")
        self._integer(where, raw, "concurrency", 1, MAX_CONCURRENCY)

    def _check_http(self, where: str, raw: dict[str, Any]) -> None:
        self._text(where, raw, "url", required=True)
        url = raw.get("url")
        if isinstance(url, str) and not url.startswith(("http://", "https://", "{{")):
            self.problem(f"{where}.url", "must start with http:// or https://")
        method = raw.get("method", "GET")
        if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
            self.problem(f"{where}.method", f"use one of {', '.join(HTTP_METHODS)}")
        headers = raw.get("headers")
        if headers is not None and (
            not isinstance(headers, dict) or not all(isinstance(value, str) for value in headers.values())
        ):
            self.problem(f"{where}.headers", "give an object of header names to string values")
        self._number(where, raw, "timeout_s", 1, 60)

    # -- the graph -----------------------------------------------------------------------------------

    def _with_branches(self, steps: list[StepSpec]) -> list[StepSpec]:
        """Make each branch step depend on its condition."""
        branches: dict[str, list[tuple[str, bool]]] = {}
        for step in steps:
            if step.type != "condition":
                continue
            for branch in ("then", "else"):
                names = step.config.get(branch) or []
                for name in [names] if isinstance(names, str) else names:
                    branches.setdefault(name, []).append((step.name, branch == "then"))
        return [
            dataclasses.replace(
                step,
                depends_on=step.depends_on | {condition for condition, _ in branches[step.name]},
                required=step.required + tuple(frozenset({condition}) for condition, _ in branches[step.name]),
                branches=tuple(branches[step.name]),
            )
            if step.name in branches
            else step
            for step in steps
        ]

    def _cycles(self, steps: list[StepSpec]) -> None:
        by_name = {step.name: step for step in steps}
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        reported: set[frozenset[str]] = set()

        def visit(name: str, path: list[str]) -> None:
            state[name] = 1
            path.append(name)
            for dependency in sorted(by_name[name].depends_on, key=lambda n: by_name[n].index):
                if state.get(dependency) == 1:
                    loop = path[path.index(dependency) :]
                    if frozenset(loop) not in reported:
                        reported.add(frozenset(loop))
                        self._cycle(loop, by_name)
                elif dependency not in state:
                    visit(dependency, path)
            path.pop()
            state[name] = 2

        for step in steps:
            if step.name not in state:
                visit(step.name, [])

    def _cycle(self, loop: list[str], by_name: dict[str, StepSpec]) -> None:
        # `loop` follows dependencies (each needs the next); show it in the direction data flows,
        # from the step that appears first in the definition.
        flow = list(reversed(loop))
        start = min(range(len(flow)), key=lambda i: by_name[flow[i]].index)
        flow = flow[start:] + flow[:start]
        first = by_name[flow[0]]
        self.problem(first.location, "cycle " + " -> ".join([*flow, flow[0]]))
