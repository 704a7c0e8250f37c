"""The portal's workflows pages (issue 12): the list, the definition editor (YAML or JSON) with its
problems shown at the step they concern, the steps drawn in stages with their dependencies,
versions, starting a run behind a cost preview, a run's live step timeline (HTMX polling of a
fragment), cancel and re-run, and the runs lists.

Thin: definitions are checked and saved by apps.workflows.definitions (the REST API's services,
YAML read by its alias-refusing loader), previews come from apps.workflows.preview and runs are
started, cancelled and re-run by apps.workflows.runs. These pages parse the form, check the role,
call one of them and draw the result.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import yaml
from django import forms
from django.contrib import messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import URLPattern, path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.api.errors import ApiError
from apps.portal.caller import caller_organization, caller_principal
from apps.portal.paging import keyset_page, keyset_page_by_time
from apps.rbac.decorators import member_may, permission_required
from apps.rbac.permissions import Permission
from apps.work.progress import progress_stream
from apps.workflows.definition import (
    MAX_DEFINITION_BYTES,
    MAX_STEPS,
    Definition,
    DefinitionInvalid,
    Problem,
    StepSpec,
    definition_load,
    definition_parse,
)
from apps.workflows.definitions import WorkflowNameTaken, workflow_create, workflow_update
from apps.workflows.models import STEP_STATUS_SHOWN, RunStatus, StepRun, Workflow, WorkflowRun, WorkflowVersion
from apps.workflows.preview import workflow_cost_preview
from apps.workflows.runs import (
    MAX_INPUT_BYTES,
    PROGRESS_TOPIC,
    RunFinished,
    RunNotRerunnable,
    run_cancel,
    run_rerun,
    run_start,
)
from apps.workflows.selectors import (
    definition_of,
    run_get,
    run_overview_list,
    run_steps,
    workflow_get,
    workflow_latest_version,
    workflow_overview_list,
    workflow_versions,
)
from cognitionos.refusals import Refusal

PAGE_SIZE = 50
VERSIONS_PAGE_SIZE = 20
# A step's output is shown up to this many characters (the API gives all of it).
MAX_SHOWN_OUTPUT_CHARS = 20_000
# How often a run's page asks for its steps while the run goes on, when it can't follow its events.
POLL_SECONDS = 2
_NAME_CURSOR_MAX = 100  # a workflow's name is at most 100 characters

# The two-step example of docs/workflows.md: what a new organization's editor starts with.
EXAMPLE_YAML = """\
inputs: [text]          # the input fields a run must give
output: french          # the step whose output is the run's output
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
EXAMPLE = yaml.safe_load(EXAMPLE_YAML)

FORMATS = (("yaml", "YAML"), ("json", "JSON"))
# Steps named in templates: `{{ steps.summary.output }}` (a linear scan, for a definition that
# did not parse as a whole; a parsed one has its dependencies from apps.workflows.definition).
_STEP_REFERENCE = re.compile(r"\bsteps\.([A-Za-z_][A-Za-z0-9_]{0,63})")
_STEP_LOCATION = re.compile(r"^steps\[(\d{1,3})\](?:\.(.+))?$")


# -- the definition, as text and as drawn steps -------------------------------------------------------------


def _ordered(source: Mapping[str, Any]) -> dict[str, Any]:
    """A stored definition with its keys in the order people write them (the database keeps JSON
    objects in its own order): inputs, output, description, steps; in a step name and type first."""
    head = ("inputs", "output", "description")
    ordered = {key: source[key] for key in head if key in source}
    ordered.update({key: value for key, value in source.items() if key not in (*head, "steps")})
    if "steps" in source:
        steps = source["steps"]
        ordered["steps"] = [_ordered_step(step) for step in steps] if isinstance(steps, list) else steps
    return ordered


def _ordered_step(step: object) -> object:
    if not isinstance(step, dict):
        return step
    first = ("name", "type", "description", "depends_on", "model", "policy", "agent")
    ordered = {key: step[key] for key in first if key in step}
    for key, value in step.items():
        if key not in ordered:
            ordered[key] = _ordered_step(value) if key == "step" else value
    return ordered


def definition_text(source: Mapping[str, Any], fmt: str) -> str:
    ordered = _ordered(source)
    if fmt == "json":
        return json.dumps(ordered, indent=2, ensure_ascii=False)
    return str(yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=100))


def definition_from_text(text: str, fmt: str) -> object:
    """What the services take: YAML as text (parsed by the workflows' own loader, which refuses
    aliases and bounds nesting), JSON parsed here into an object (bounded by the form's length)."""
    if fmt != "json":
        return text
    try:
        return json.loads(text)
    except RecursionError as error:
        raise DefinitionInvalid([Problem("definition", "invalid JSON: nested too deeply")]) from error
    except json.JSONDecodeError as error:
        where = f"at line {error.lineno}, column {error.colno}"
        raise DefinitionInvalid([Problem("definition", f"invalid JSON {where}: {error.msg}")]) from error


@dataclass(frozen=True)
class Shown:
    """A problem as the page shows it: at its step (`step` its index) or at the top."""

    location: str
    message: str
    step: int | None = None
    field: str = ""


def problems_shown(problems: list[Problem]) -> list[Shown]:
    shown = []
    for problem in problems:
        found = _STEP_LOCATION.match(problem.location)
        if found:
            shown.append(Shown(problem.location, problem.message, int(found.group(1)), found.group(2) or ""))
        else:
            shown.append(Shown(problem.location, problem.message))
    return shown


@dataclass
class StepRow:
    index: int
    name: str
    type: str
    runs_on: str  # the model, policy or agent
    depends_on: list[tuple[str, int | None]]  # (name, index of that step or None when there is none)
    problems: list[Shown] = field(default_factory=list)
    inner: str = ""  # a map step's per-item step type
    stage: int = 0

    @property
    def number(self) -> int:
        return self.index + 1


def _runs_on(config: Mapping[str, Any]) -> str:
    for key, label in (("model", ""), ("policy", "policy "), ("agent", "agent ")):
        value = config.get(key)
        if isinstance(value, str | int) and value != "":
            return f"{label}{value}"
    return ""


def _references(value: object, found: list[str]) -> None:
    pending = [value]
    while pending:  # iterative: the definition is bounded in size, its nesting is the user's
        item = pending.pop()
        if isinstance(item, str):
            found.extend(_STEP_REFERENCE.findall(item))
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def _rows_from_definition(definition: Definition) -> list[StepRow]:
    index = {step.name: step.index for step in definition.steps}
    rows = []
    for step in definition.steps:
        config: Mapping[str, Any] = step.inner.config if step.inner is not None else step.config
        names = [name for name in index if name in step.depends_on]  # in the definition's order
        rows.append(
            StepRow(
                index=step.index,
                name=step.name,
                type=step.type,
                runs_on=_runs_on(config),
                depends_on=[(name, index[name]) for name in names],
                inner=step.inner.type if step.inner is not None else "",
            )
        )
    return rows


def _rows_from_source(source: Mapping[str, Any]) -> list[StepRow]:
    """Steps as written, for a definition that was refused: what can be read of each is drawn, and
    references to steps that don't exist are marked."""
    raw_steps = source.get("steps")
    if not isinstance(raw_steps, list):
        return []
    # A refused definition may list thousands of steps (within the size bounds): draw as many as a
    # definition may have, so that drawing stays cheap (stages take rounds times steps).
    raw_steps = raw_steps[:MAX_STEPS]
    names: dict[str, int] = {}
    for number, raw in enumerate(raw_steps):
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            names.setdefault(raw["name"], number)
    rows = []
    for number, raw in enumerate(raw_steps):
        step = raw if isinstance(raw, dict) else {}
        explicit = step.get("depends_on")
        wanted = [explicit] if isinstance(explicit, str) else [n for n in explicit or [] if isinstance(n, str)]
        _references({key: value for key, value in step.items() if key != "depends_on"}, wanted)
        own = step.get("name") if isinstance(step.get("name"), str) else ""
        depends = [(name, names.get(name)) for name in dict.fromkeys(wanted) if name != own]
        inner = step.get("step") if isinstance(step.get("step"), dict) else None
        rows.append(
            StepRow(
                index=number,
                name=str(own or f"step {number + 1}"),
                type=str(step.get("type") or "?"),
                runs_on=_runs_on(inner or step),
                depends_on=depends,
                inner=str(inner.get("type") or "") if inner else "",
            )
        )
    return rows


def _staged(rows: list[StepRow]) -> list[list[StepRow]]:
    """Steps in stages: a step's stage is one after the latest of the steps it depends on, so a
    stage's steps can run at the same time; a step after one that doesn't exist (refused, but drawn)
    is not drawn beside the first ones. A cycle (refused, but drawn) stops after len(rows) rounds."""
    by_index = {row.index: row for row in rows}
    for _ in range(len(rows)):
        changed = False
        for row in rows:
            stage = max(
                (by_index[i].stage + 1 for _, i in row.depends_on if i is not None and i in by_index), default=0
            )
            if any(i is None or i not in by_index for _, i in row.depends_on):
                stage = max(stage, 1)  # after a step that doesn't exist: never with the first ones
            stage = min(stage, len(rows) - 1)
            if stage != row.stage:
                row.stage, changed = stage, True
        if not changed:
            break
    stages: dict[int, list[StepRow]] = {}
    for row in rows:
        stages.setdefault(row.stage, []).append(row)
    return [stages[key] for key in sorted(stages)]


def step_stages(
    *,
    definition: Definition | None = None,
    source: Mapping[str, Any] | None = None,
    shown: list[Shown] = (),  # type: ignore[assignment]
) -> list[list[StepRow]]:
    rows = _rows_from_definition(definition) if definition is not None else _rows_from_source(source or {})
    for problem in shown:
        if problem.step is not None and problem.step < len(rows):
            rows[problem.step].problems.append(problem)
    return _staged(rows)


# -- forms ----------------------------------------------------------------------------------------------------


class DefinitionForm(forms.Form):
    name = forms.RegexField(
        r"^[\w .:-]{1,100}$",
        label="Name",
        max_length=100,
        help_text="Unique in the organization: letters, digits, spaces and . : - _",
        error_messages={"invalid": "Use letters, digits, spaces and . : - _ (at most 100)."},
    )
    format = forms.ChoiceField(label="Format", choices=FORMATS, widget=forms.RadioSelect, initial="yaml")
    definition = forms.CharField(
        label="Definition",
        strip=False,
        max_length=MAX_DEFINITION_BYTES,
        # wrap="off": a YAML line wrapped by the browser would read as two lines.
        widget=forms.Textarea(
            attrs={"rows": 18, "spellcheck": "false", "class": "wf-editor", "autocomplete": "off", "wrap": "off"}
        ),
        help_text="The steps, in the format chosen above. Problems are shown at the step they concern.",
    )

    def __init__(self, *args: Any, with_name: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not with_name:
            del self.fields["name"]


def _fmt(request: HttpRequest) -> str:
    value = request.GET.get("format", "yaml")
    return value if value in ("yaml", "json") else "yaml"


# -- keyset pages on keys that aren't integers ----------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_query: str | None
    first_query: str | None
    previous_query: None = None

    @property
    def paged(self) -> bool:
        return self.next_query is not None


def _name_page(rows: QuerySet[Workflow], request: HttpRequest) -> Page:
    """Workflows by name (unique, indexed), a page after the name in `after=` (paging.keyset_page
    takes integer keys, and a list of workflows reads best by name)."""
    after = request.GET.get("after", "")[:_NAME_CURSOR_MAX]
    if after:
        rows = rows.filter(name__gt=after)
    fetched = list(rows.order_by("name")[: PAGE_SIZE + 1])
    items = fetched[:PAGE_SIZE]
    more = len(fetched) > PAGE_SIZE
    return Page(
        items=items,
        next_query=urllib.parse.urlencode({"after": items[-1].name}) if more else None,
        first_query="" if after else None,
    )


def _ms(start: dt.datetime | None, end: dt.datetime | None) -> int | None:
    return int((end - start).total_seconds() * 1000) if start and end else None


def took(ms: int | None) -> str:
    """A duration as people read it: 850 ms, 2.4 s, 3 min 5 s."""
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms // 60_000} min {ms % 60_000 // 1000} s"


def _status_filter(request: HttpRequest) -> str:
    status = request.GET.get("status", "")
    return status if status in RunStatus.values else ""


# -- pages ------------------------------------------------------------------------------------------------------


@permission_required(Permission.WORKFLOWS_READ)
@never_cache
@require_GET
def workflows(request: HttpRequest) -> HttpResponse:
    """The organization's workflows by name, each with its latest version and its last run."""
    page = _name_page(workflow_overview_list(), request)
    return render(
        request,
        "portal/workflows/list.html",
        {
            "organization": caller_organization(request),
            "page": page,
            "may_write": member_may(request, Permission.WORKFLOWS_WRITE),
        },
    )


def _editor(
    request: HttpRequest,
    *,
    form: DefinitionForm,
    workflow: Workflow | None,
    problems: list[Shown] | None = None,
    status: int = 200,
    base: WorkflowVersion | None = None,
) -> HttpResponse:
    """The editor with the steps of the text in it drawn: as they would be saved, or, for a
    refused definition, as far as they can be read, each with its problems beside it."""
    shown = problems or []
    definition: Definition | None = None
    source: Mapping[str, Any] | None = None
    try:
        typed = definition_from_text(str(form["definition"].value() or ""), str(form["format"].value() or "yaml"))
        source = definition_load(typed)
        definition = None if shown else definition_parse(source)
    except DefinitionInvalid:
        definition = None
    return render(
        request,
        "portal/workflows/editor.html",
        {
            "organization": caller_organization(request),
            "workflow": workflow,
            "form": form,
            "shown": shown,
            "top_problems": [problem for problem in shown if problem.step is None],
            "stages": step_stages(definition=definition, source=source, shown=shown),
            "base": base,
            "example": workflow is None,
        },
        status=status,
    )


def _save(
    request: HttpRequest, form: DefinitionForm, workflow: Workflow | None
) -> tuple[WorkflowVersion | None, list[Shown]]:
    """Create the workflow (or its next version) from a valid form; the problems otherwise."""
    try:
        definition = definition_from_text(form.cleaned_data["definition"], form.cleaned_data["format"])
    except DefinitionInvalid as invalid:
        return None, problems_shown(invalid.problems)
    try:
        if workflow is None:
            version = workflow_create(
                organization=caller_organization(request),
                actor=caller_principal(request),
                name=form.cleaned_data["name"],
                definition=definition,
            )
        else:
            version = workflow_update(
                organization=caller_organization(request),
                actor=caller_principal(request),
                workflow=workflow,
                definition=definition,
            )
    except DefinitionInvalid as invalid:
        return None, problems_shown(invalid.problems)
    except WorkflowNameTaken as taken:
        form.add_error("name", f"A workflow named “{taken.name}” already exists: choose another name.")
        return None, []
    except Refusal as refused:
        return None, [Shown(refused.param or "definition", str(refused))]
    return version, []


@permission_required(Permission.WORKFLOWS_WRITE)
@never_cache
def workflow_new(request: HttpRequest) -> HttpResponse:
    """A new workflow: its name and first definition, YAML or JSON (the docs' example to start)."""
    if request.method != "POST":
        fmt = _fmt(request)
        # The example as the docs write it (with its comments) in YAML; converted for JSON.
        text = EXAMPLE_YAML if fmt == "yaml" else definition_text(EXAMPLE, fmt)
        form = DefinitionForm(initial={"format": fmt, "definition": text})
        return _editor(request, form=form, workflow=None)
    form = DefinitionForm(request.POST)
    if not form.is_valid():
        return _editor(request, form=form, workflow=None, status=400)
    version, shown = _save(request, form, None)
    if version is None:
        return _editor(request, form=form, workflow=None, problems=shown, status=400)
    messages.success(request, f"Created {version.workflow.name} (version 1).")
    return redirect("portal-workflow", workflow_id=version.workflow_id)


def _workflow(workflow_id: UUID) -> Workflow:
    return workflow_get(workflow_id=workflow_id)  # 404 for another organization's (not in this schema)


def _version_of(workflow: Workflow, number: int) -> WorkflowVersion:
    version = workflow_versions(workflow=workflow).filter(number=number).first()
    if version is None:
        raise Http404("no such version")
    return version


@permission_required(Permission.WORKFLOWS_WRITE)
@never_cache
def workflow_edit(request: HttpRequest, workflow_id: UUID) -> HttpResponse:
    """A new version of a workflow, from its latest version (or the one in `?from=`)."""
    workflow = _workflow(workflow_id)
    latest = workflow_latest_version(workflow=workflow)
    if request.method != "POST":
        number = request.GET.get("from", "")
        base = _version_of(workflow, int(number)) if number.isdigit() and len(number) < 10 else latest
        fmt = _fmt(request)
        form = DefinitionForm(
            initial={"format": fmt, "definition": definition_text(base.definition, fmt)}, with_name=False
        )
        return _editor(request, form=form, workflow=workflow, base=base)
    form = DefinitionForm(request.POST, with_name=False)
    if not form.is_valid():
        return _editor(request, form=form, workflow=workflow, status=400, base=latest)
    version, shown = _save(request, form, workflow)
    if version is None:
        return _editor(request, form=form, workflow=workflow, problems=shown, status=400)
    messages.success(request, f"Saved version {version.number} of {workflow.name}.")
    return redirect("portal-workflow", workflow_id=workflow.pk)


def _runs_context(request: HttpRequest, workflow: Workflow | None) -> dict[str, Any]:
    status = _status_filter(request)
    keep = {"status": status} if status else {}
    page = keyset_page_by_time(
        run_overview_list(workflow=workflow, statuses=[status] if status else None), request=request, keep=keep
    )
    return {
        "runs_page": page,
        "run_rows": [(run, took(_ms(run.started_at, run.finished_at))) for run in page.items],
        "status": status,
        "statuses": RunStatus.choices,
    }


@permission_required(Permission.WORKFLOWS_READ)
@never_cache
@require_GET
def workflow_detail(request: HttpRequest, workflow_id: UUID) -> HttpResponse:
    """A workflow: its latest version's steps, its versions and its runs."""
    workflow = _workflow(workflow_id)
    latest = workflow_latest_version(workflow=workflow)
    versions = keyset_page(
        workflow_versions(workflow=workflow),
        request=request,
        key="number",
        descending=True,
        prefix="versions_",
        size=VERSIONS_PAGE_SIZE,
    )
    return render(
        request,
        "portal/workflows/detail.html",
        {
            "organization": caller_organization(request),
            "workflow": workflow,
            "version": latest,
            "latest": latest,
            "stages": step_stages(definition=definition_of(version=latest)),
            "versions_page": versions,
            "may_write": member_may(request, Permission.WORKFLOWS_WRITE),
            **_runs_context(request, workflow),
        },
    )


@permission_required(Permission.WORKFLOWS_READ)
@never_cache
@require_GET
def workflow_version(request: HttpRequest, workflow_id: UUID, number: int) -> HttpResponse:
    """One version as it was saved: its steps and its definition."""
    workflow = _workflow(workflow_id)
    version = _version_of(workflow, number)
    fmt = _fmt(request)
    return render(
        request,
        "portal/workflows/version.html",
        {
            "organization": caller_organization(request),
            "workflow": workflow,
            "version": version,
            "latest": workflow_latest_version(workflow=workflow),
            "stages": step_stages(definition=definition_of(version=version)),
            "text": definition_text(version.definition, fmt),
            "format": fmt,
            "may_write": member_may(request, Permission.WORKFLOWS_WRITE),
        },
    )


# -- starting a run -------------------------------------------------------------------------------------------


def input_names(definition: Definition) -> tuple[list[str], bool]:
    """The run's input fields: the declared ones (and True), or those its templates use."""
    if definition.inputs is not None:
        return list(definition.inputs), True
    used: dict[str, None] = {}
    for step in definition.steps:
        for spec in (step, step.inner):
            if spec is None:
                continue
            for template in spec.templates.values():
                for placeholder in template.placeholders:
                    for reference in placeholder.references:
                        if reference.path[0] == "input" and len(reference.path) > 1:
                            used[str(reference.path[1])] = None
    return list(used), False


@dataclass
class RunForm:
    """The run's input as typed: one field per declared input, or a JSON object."""

    names: list[str]
    declared: bool
    values: dict[str, str]
    json_text: str
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def empty(cls, definition: Definition) -> RunForm:
        names, declared = input_names(definition)
        text = json.dumps(dict.fromkeys(names, ""), indent=2) if names else "{}"
        return cls(names, declared, dict.fromkeys(names, ""), text)

    @classmethod
    def posted(cls, definition: Definition, request: HttpRequest) -> RunForm:
        names, declared = input_names(definition)
        values = {name: request.POST.get(f"input_{name}", "")[: MAX_INPUT_BYTES + 1] for name in names}
        return cls(names, declared, values, request.POST.get("input_json", "{}")[: MAX_INPUT_BYTES + 1])

    @property
    def fields(self) -> list[tuple[str, str, str]]:
        return [(name, self.values.get(name, ""), self.errors.get(f"input.{name}", "")) for name in self.names]

    def data(self) -> dict[str, Any] | None:
        """The input as an object, or None with `errors` saying what is wrong."""
        if self.declared:
            if sum(len(value) for value in self.values.values()) > MAX_INPUT_BYTES:
                self.errors["input"] = f"The input is limited to {MAX_INPUT_BYTES} bytes."
                return None
            return {name: _typed(value) for name, value in self.values.items()}
        if len(self.json_text) > MAX_INPUT_BYTES:
            self.errors["input"] = f"The input is limited to {MAX_INPUT_BYTES} bytes."
            return None
        try:
            data = json.loads(self.json_text or "{}")
        except (RecursionError, json.JSONDecodeError) as error:
            where = f" at line {error.lineno}, column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
            self.errors["input"] = f'Not valid JSON{where}: give an object such as {{"text": "…"}}.'
            return None
        if not isinstance(data, dict):
            self.errors["input"] = 'Give a JSON object, such as {"text": "…"}.'
            return None
        return data


def _typed(value: str) -> Any:
    """A declared input's value: a list or an object when it is written as one in JSON (what a map
    step iterates), the text as typed otherwise."""
    if value.lstrip()[:1] in ("[", "{"):
        try:
            parsed = json.loads(value)
        except (RecursionError, json.JSONDecodeError):
            return value
        if isinstance(parsed, list | dict):
            return parsed
    return value


def _start_page(
    request: HttpRequest,
    workflow: Workflow,
    version: WorkflowVersion,
    form: RunForm,
    *,
    data: dict[str, Any] | None,
    status: int = 200,
) -> HttpResponse:
    definition = definition_of(version=version)
    preview = workflow_cost_preview(
        principal=caller_principal(request),
        definition=definition,
        data=data,
        organization=caller_organization(request),
    )
    return render(
        request,
        "portal/workflows/start.html",
        {
            "organization": caller_organization(request),
            "workflow": workflow,
            "version": version,
            "latest": workflow_latest_version(workflow=workflow),
            "form": form,
            "preview": preview,
            "preview_steps": [_preview_step(step) for step in preview["steps"]],
            "stages": step_stages(definition=definition),
            "may_write": member_may(request, Permission.WORKFLOWS_WRITE),
            "max_input_bytes": MAX_INPUT_BYTES,
        },
        status=status,
    )


def _preview_step(step: Mapping[str, Any]) -> dict[str, Any]:
    """A step of the preview under names a template can read (`items` would be the dict's method)."""
    expected_tokens = step.get("expected_tokens") or {}
    worst_tokens = step.get("worst_case_tokens") or {}
    return {
        "name": step["name"],
        "type": step["type"],
        "expected_usd": step["expected_usd"],
        "worst_case_usd": step["worst_case_usd"],
        "model": step.get("model") or "",
        "worst_case_model": step.get("worst_case_model") or "",
        "error": step.get("error") or "",
        "item_count": step.get("items"),
        "expected_tokens": (expected_tokens.get("input"), expected_tokens.get("output")),
        "worst_tokens": (worst_tokens.get("input"), worst_tokens.get("output")),
    }


def _run_version(request: HttpRequest, workflow: Workflow) -> WorkflowVersion:
    number = (request.POST if request.method == "POST" else request.GET).get("version", "")
    if number.isdigit() and len(number) < 10:
        return _version_of(workflow, int(number))
    return workflow_latest_version(workflow=workflow)


@permission_required(Permission.WORKFLOWS_READ)
@never_cache
def workflow_start(request: HttpRequest, workflow_id: UUID) -> HttpResponse:
    """The run form with the cost preview (expected and worst case against the budgets) shown
    before anything runs; POSTed with "Update the cost preview", the preview for the input typed.
    Read-only roles see the preview and no start button."""
    workflow = _workflow(workflow_id)
    version = _run_version(request, workflow)
    definition = definition_of(version=version)
    if request.method != "POST":
        return _start_page(request, workflow, version, RunForm.empty(definition), data=None)
    form = RunForm.posted(definition, request)
    data = form.data()
    return _start_page(request, workflow, version, form, data=data, status=200 if data is not None else 400)


@permission_required({"POST": Permission.WORKFLOWS_WRITE})
@require_POST
def workflow_run(request: HttpRequest, workflow_id: UUID) -> HttpResponse:
    """Start a run with the input typed; its page follows the steps."""
    workflow = _workflow(workflow_id)
    version = _run_version(request, workflow)
    definition = definition_of(version=version)
    form = RunForm.posted(definition, request)
    data = form.data()
    if data is None:
        return _start_page(request, workflow, version, form, data=None, status=400)
    try:
        run = run_start(
            organization=caller_organization(request),
            principal=caller_principal(request),
            workflow=workflow,
            input=data,
            version=version,
        )
    except Refusal as refused:
        param = refused.param or "input"
        form.errors[param if param in {f"input.{name}" for name in form.names} else "input"] = str(refused)
        return _start_page(request, workflow, version, form, data=data, status=refused.http_status)
    messages.success(request, f"Started a run of {workflow.name} (version {version.number}).")
    return redirect("portal-workflow-run", run_id=run.pk)


# -- runs -----------------------------------------------------------------------------------------------------


@permission_required(Permission.WORKFLOWS_READ)
@never_cache
@require_GET
def runs(request: HttpRequest) -> HttpResponse:
    """Every workflow's runs, newest first, by status."""
    return render(
        request,
        "portal/workflows/runs.html",
        {"organization": caller_organization(request), **_runs_context(request, None)},
    )


def _shown_output(value: Any) -> tuple[str, bool]:
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
    return text[:MAX_SHOWN_OUTPUT_CHARS], len(text) > MAX_SHOWN_OUTPUT_CHARS


@dataclass(frozen=True)
class StepLine:
    step: StepRun
    spec: StepSpec | None
    status: str
    duration: str
    output: str
    output_cut: bool
    has_output: bool
    items_done: int | None


def _step_lines(run: WorkflowRun) -> list[StepLine]:
    definition = definition_of(version=run.version)
    specs = {spec.name: spec for spec in definition.steps}
    lines = []
    for step in run_steps(run=run):
        spec = specs.get(step.name)
        has_output = step.output is not None
        output, cut = _shown_output(step.output) if has_output else ("", False)
        lines.append(
            StepLine(
                step=step,
                spec=spec,
                status=STEP_STATUS_SHOWN.get(step.status, step.status),
                duration=took(_ms(step.started_at, step.finished_at)),
                output=output,
                output_cut=cut,
                has_output=has_output,
                items_done=len(step.items) if spec is not None and spec.type == "map" else None,
            )
        )
    return lines


def _run_context(run: WorkflowRun, *, may_write: bool) -> dict[str, Any]:
    output, cut = _shown_output(run.output) if run.output is not None else ("", False)
    return {
        "run": run,
        "lines": _step_lines(run),
        "run_output": output,
        "run_output_cut": cut,
        "queued_for": took(_ms(run.created_at, run.started_at)),
        "ran_for": took(_ms(run.started_at, run.finished_at)),
        "may_cancel": may_write and not run.is_finished,
        "may_rerun": may_write and run.status == RunStatus.FAILED and run.content_deleted_at is None,
    }


@permission_required(Permission.WORKFLOWS_READ)
@never_cache
@require_GET
def run_detail(request: HttpRequest, run_id: UUID) -> HttpResponse:
    """A run: its status, its steps as they go (followed by its events), output, cost."""
    run = run_get(run_id=run_id)
    context = _run_context(run, may_write=member_may(request, Permission.WORKFLOWS_WRITE))
    context["organization"] = caller_organization(request)
    context["input_text"] = _shown_output(run.input)[0] if run.content_deleted_at is None else ""
    context["poll_seconds"] = POLL_SECONDS
    return render(request, "portal/workflows/run.html", context)


@permission_required(Permission.WORKFLOWS_READ)
@never_cache
@require_GET
def run_live(request: HttpRequest, run_id: UUID) -> HttpResponse:
    """The run's live part (status, steps, actions), for a page that can't hold its events
    stream open (every long-response slot taken, a proxy that cuts streams): polled instead."""
    context = _run_context(run_get(run_id=run_id), may_write=member_may(request, Permission.WORKFLOWS_WRITE))
    return render(request, "portal/workflows/_run_live.html", context)


@permission_required(Permission.WORKFLOWS_READ)
@never_cache
@require_GET
def run_events(request: HttpRequest, run_id: UUID) -> HttpResponse | StreamingHttpResponse:
    """The run's live part, rendered, each time the run or a step changes: the runtime's progress
    stream (apps.work.progress, woken by Redis; the API's /runs/<id>/events follows the same
    topic), ending when the run does."""
    run_id = run_get(run_id=run_id).pk
    may_write = member_may(request, Permission.WORKFLOWS_WRITE)

    def poll() -> tuple[list[tuple[str, str, Any]], bool] | None:
        run = WorkflowRun.objects.select_related("workflow", "version").filter(pk=run_id).first()
        if run is None:
            return None
        # With the request: the cancel and re-run forms carry its CSRF token.
        html = render_to_string("portal/workflows/_run_live.html", _run_context(run, may_write=may_write), request)
        return [("run", "live", {"status": run.status, "finished": run.is_finished, "html": html})], run.is_finished

    try:
        return progress_stream(
            organization=caller_organization(request), topic=PROGRESS_TOPIC, object_id=run_id, poll=poll
        )
    except ApiError as busy:  # every long-response slot taken: the page polls the fragment instead
        response = HttpResponse(str(busy.detail), status=busy.status_code, content_type="text/plain")
        for header, value in busy.extra_headers.items():
            response[header] = value
        return response


@permission_required({"POST": Permission.WORKFLOWS_WRITE})
@require_POST
def run_cancel_page(request: HttpRequest, run_id: UUID) -> HttpResponse:
    run = run_get(run_id=run_id)
    try:
        run_cancel(organization=caller_organization(request), actor=caller_principal(request), run=run)
    except RunFinished as finished:
        messages.warning(request, f"Not cancelled: {finished}.")
    else:
        messages.success(request, "Cancelled: no further step of this run will start.")
    return redirect("portal-workflow-run", run_id=run.pk)


@permission_required({"POST": Permission.WORKFLOWS_WRITE})
@require_POST
def run_rerun_page(request: HttpRequest, run_id: UUID) -> HttpResponse:
    run = run_get(run_id=run_id)
    try:
        rerun = run_rerun(organization=caller_organization(request), actor=caller_principal(request), run=run)
    except RunNotRerunnable as refused:
        messages.warning(request, f"Not re-run: {refused}.")
        return redirect("portal-workflow-run", run_id=run.pk)
    messages.success(request, "Re-running from the failed step: the steps that succeeded before it keep their output.")
    return redirect("portal-workflow-run", run_id=rerun.pk)


urlpatterns: list[URLPattern] = [
    path("workflows/", workflows, name="portal-workflows"),
    path("workflows/new/", workflow_new, name="portal-workflow-new"),
    path("workflows/runs/", runs, name="portal-workflow-runs"),
    path("workflows/runs/<uuid:run_id>/", run_detail, name="portal-workflow-run"),
    path("workflows/runs/<uuid:run_id>/live/", run_live, name="portal-workflow-run-live"),
    path("workflows/runs/<uuid:run_id>/events/", run_events, name="portal-workflow-run-events"),
    path("workflows/runs/<uuid:run_id>/cancel/", run_cancel_page, name="portal-workflow-run-cancel"),
    path("workflows/runs/<uuid:run_id>/rerun/", run_rerun_page, name="portal-workflow-run-rerun"),
    path("workflows/<uuid:workflow_id>/", workflow_detail, name="portal-workflow"),
    path("workflows/<uuid:workflow_id>/edit/", workflow_edit, name="portal-workflow-edit"),
    path("workflows/<uuid:workflow_id>/start/", workflow_start, name="portal-workflow-start"),
    path("workflows/<uuid:workflow_id>/run/", workflow_run, name="portal-workflow-run-start"),
    path("workflows/<uuid:workflow_id>/versions/<int:number>/", workflow_version, name="portal-workflow-version"),
]
