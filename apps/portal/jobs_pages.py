"""The portal's jobs pages (issue 12): the list with filters and live status, a job's detail with
its progress followed live, submit and cancel.

Submitting validates with the REST API's own serializer (apps.jobs.api.JobInput) and calls the same
services (`job_submit`, which shapes the request with `job_request_build`); the list filters with
the API's FilterSet. The list's unfinished rows are refreshed by HTMX polling of one small fragment
(`jobs/live/`, one query for every row shown); a job's page follows the runtime's progress stream
(apps.work.progress, server-sent events woken by Redis).
"""

from __future__ import annotations

import json
import re
import secrets
import urllib.parse
import uuid
from typing import Any

import django_filters
from django import forms
from django.contrib import messages
from django.db.models import CharField, Q, QuerySet, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce, NullIf
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import URLPattern, path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.agents.models import POLICIES, Agent
from apps.agents.selectors import agent_find
from apps.api.errors import ApiError
from apps.jobs.api import JobFilter, JobInput, JobOutput
from apps.jobs.models import Job, JobStatus
from apps.jobs.selectors import job_get
from apps.jobs.services import JobFinished, job_cancel, job_submit
from apps.llm.calls import chat_model_choices
from apps.portal.caller import caller_organization, caller_principal
from apps.portal.form_fields import NON_FIELD, BoundField, FieldSpec, bind, error_messages, unplaced_errors
from apps.portal.paging import DEFAULT_PAGE_SIZE, keyset_page_by_time
from apps.rbac.decorators import member_may, permission_required
from apps.rbac.permissions import Permission
from apps.work.progress import progress_stream
from cognitionos.redis import redis_client
from cognitionos.refusals import Refusal

# How many agents the pickers offer (by name); a job names any agent of the organization.
AGENT_CHOICES_MAX = 200
# The submit form's text: a bound of the page's own (the API's is the request body's size).
PROMPT_MAX_CHARS = 100_000
LIVE_POLL_SECONDS = 2
# How long a submit form's one-time token is remembered (a form sent again later submits again).
SUBMISSION_SECONDS = 3600
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")

_OUTPUT = JobOutput()  # its model and timings, as the API shows them


def _agent_options(blank: str) -> tuple[tuple[str, str], ...]:
    agents = Agent.objects.order_by("name").values_list("id", "name")[:AGENT_CHOICES_MAX]
    return (("", blank), *((str(agent_id), name) for agent_id, name in agents))


# -- the list -------------------------------------------------------------------------------------


class PortalJobFilter(JobFilter):
    """The API's job filters, and the model asked for (the request's `model` or `policy`)."""

    model = django_filters.CharFilter(method="filter_model", max_length=100, label="Model or policy")

    class Meta(JobFilter.Meta):
        fields = ("status", "agent")

    def filter_model(self, rows: QuerySet[Job], name: str, value: str) -> QuerySet[Job]:
        return rows.filter(Q(request__model=value) | Q(request__policy=value))


_FILTER_FIELDS = ("status", "agent", "model", "created_after", "created_before")


def _job_rows(rows: QuerySet[Job]) -> QuerySet[Job]:
    """Jobs as a list shows them: the agent's name joined, the model shown computed by the database
    (the answering model, else the one asked for), and not the prompt or the answer."""
    return (
        rows.select_related("agent")
        .defer("request", "result", "agent__system_prompt", "agent__description")
        .annotate(
            model_shown=Coalesce(
                NullIf(KT("result__model"), Value("")),
                NullIf(KT("request__model"), Value("")),
                KT("request__policy"),
                output_field=CharField(),
            )
        )
    )


def _filter_form(filterset: PortalJobFilter) -> forms.Form:
    form: forms.Form = filterset.form
    status = form.fields["status"]
    status.widget = forms.CheckboxSelectMultiple(choices=JobStatus.choices)
    status.label = "Status"
    agent = form.fields["agent"]
    agent.widget = forms.Select(choices=_agent_options("Any agent"))
    agent.label = "Agent"
    form.fields["model"].widget.attrs["placeholder"] = "gpt-4o-mini, cheapest…"
    for name, label in (("created_after", "Submitted from (UTC)"), ("created_before", "Submitted until (UTC)")):
        form.fields[name].label = label
        form.fields[name].widget.input_type = "datetime-local"
    return form


@permission_required(Permission.JOBS_READ)
@never_cache
@require_GET
def jobs(request: HttpRequest) -> HttpResponse:
    """The organization's jobs, newest first, filtered as the REST API filters them, a page at a time."""
    filterset = PortalJobFilter(request.GET, queryset=Job.objects.all())
    form = _filter_form(filterset)
    valid = filterset.is_valid()
    # Kept in the pager's links: each filter's values, as many as there are statuses at most.
    filters = [
        (name, value)
        for name in _FILTER_FIELDS
        for value in request.GET.getlist(name)[: len(JobStatus.choices)]
        if value and valid
    ]
    page = keyset_page_by_time(
        _job_rows(filterset.qs if valid else Job.objects.none()),
        request=request,
        keep=filters,
    )
    rows = [_row(job) for job in page.items]
    return render(
        request,
        "portal/jobs/list.html",
        {
            "organization": caller_organization(request),
            "filter_form": form,
            "filter_fields": [form[name] for name in _FILTER_FIELDS if name != "status"],
            "page": page,
            "rows": rows,
            "live_query": _live_query([row["job"] for row in rows]),
            "live_poll_seconds": LIVE_POLL_SECONDS,
            "filtered": bool(filters),
            "may_write": member_may(request, Permission.JOBS_WRITE),
        },
        status=200 if valid else 400,
    )


def _row(job: Job) -> dict[str, Any]:
    return {"job": job, "model": getattr(job, "model_shown", None), "timings": _OUTPUT.get_timings(job)}


def _live_query(jobs_shown: list[Job]) -> str:
    """The live fragment's query: the unfinished jobs of the page (none: nothing to follow)."""
    return urllib.parse.urlencode([("id", str(job.pk)) for job in jobs_shown if not job.is_finished])


@permission_required(Permission.JOBS_READ)
@never_cache
@require_GET
def jobs_live(request: HttpRequest) -> HttpResponse:
    """The rows of the jobs a list page shows as unfinished, re-read (one query), swapped in place
    by HTMX; it keeps polling while any of them is unfinished."""
    ids: list[uuid.UUID] = []
    for value in request.GET.getlist("id")[:DEFAULT_PAGE_SIZE]:
        try:
            ids.append(uuid.UUID(value))
        except ValueError:
            continue
    found = {job.pk: job for job in _job_rows(Job.objects.filter(pk__in=ids))}
    rows = [_row(found[job_id]) for job_id in ids if job_id in found]
    return render(
        request,
        "portal/jobs/_live.html",
        {
            "rows": rows,
            "live_query": _live_query([row["job"] for row in rows]),
            "live_poll_seconds": LIVE_POLL_SECONDS,
            "may_write": member_may(request, Permission.JOBS_WRITE),
        },
    )


# -- submit ---------------------------------------------------------------------------------------


def _model_suggestions(request: HttpRequest) -> tuple[str, ...]:
    """The chat models the organization can call now, as /v1/models lists them."""
    return tuple(choice.name for choice in chat_model_choices(organization=caller_organization(request)))


def _submit_specs(request: HttpRequest) -> list[FieldSpec]:
    max_tokens = JobInput().fields["max_tokens"]  # the API's bounds, shown by the browser too
    low, high = getattr(max_tokens, "min_value", 1), getattr(max_tokens, "max_value", 1_000_000)
    return [
        FieldSpec(
            "agent",
            "Agent",
            kind="select",
            help="Its system prompt, model and defaults apply; what you set below wins.",
            options=_agent_options("No agent"),
        ),
        FieldSpec(
            "model",
            "Model",
            help="A model of the catalog, e.g. gpt-4o-mini. Or leave it empty and choose a policy or an agent.",
            attrs={"maxlength": "100", "autocomplete": "off", "spellcheck": "false"},
            suggestions=_model_suggestions(request),
        ),
        FieldSpec(
            "policy",
            "Routing policy",
            kind="select",
            help="Instead of a model: let the router choose one.",
            options=(("", "None"), *((policy, policy.title()) for policy in POLICIES)),
        ),
        FieldSpec(
            "system",
            "System message (optional)",
            kind="textarea",
            attrs={"rows": "2", "maxlength": str(PROMPT_MAX_CHARS)},
        ),
        FieldSpec("prompt", "Prompt", kind="textarea", attrs={"rows": "6", "maxlength": str(PROMPT_MAX_CHARS)}),
        FieldSpec(
            "temperature", "Temperature", kind="number", help="0 to 2", attrs={"min": "0", "max": "2", "step": "0.1"}
        ),
        FieldSpec("top_p", "Top p", kind="number", help="0 to 1", attrs={"min": "0", "max": "1", "step": "0.05"}),
        FieldSpec(
            "max_tokens",
            "Max tokens",
            kind="number",
            help="Longest answer, in tokens",
            attrs={"min": str(low), "max": str(high), "step": "1"},
        ),
        FieldSpec(
            "max_cost_usd",
            "Max cost (USD)",
            kind="number",
            help="Refused if it could cost more",
            attrs={"min": "0", "step": "0.000001"},
        ),
    ]


_SAMPLING = ("temperature", "top_p", "max_tokens", "max_cost_usd")


def _job_input(values: dict[str, str], errors: dict[str, list[str]]) -> dict[str, Any]:
    """The form's fields as the API's request body (what a person left empty is not sent)."""
    body: dict[str, Any] = {name: values[name] for name in ("model", "policy", "agent", *_SAMPLING) if values[name]}
    if len(values["system"]) > PROMPT_MAX_CHARS:
        errors.setdefault("system", []).append(f"At most {PROMPT_MAX_CHARS:,} characters.")
    if len(values["prompt"]) > PROMPT_MAX_CHARS:
        errors.setdefault("prompt", []).append(f"At most {PROMPT_MAX_CHARS:,} characters.")
    if not values["prompt"].strip():
        errors.setdefault("prompt", []).append("Write the prompt the model answers.")
    elif values["system"].strip():
        body["messages"] = [
            {"role": "system", "content": values["system"]},
            {"role": "user", "content": values["prompt"]},
        ]
    else:
        body["prompt"] = values["prompt"]
    return body


def _field_of(name: str | None) -> str:
    """The form field an API error names (`messages[0].content` is the prompt's; a field the form
    doesn't show: the form's own)."""
    base = re.split(r"[\[.]", name or "", maxsplit=1)[0]
    if base in ("messages", "prompt"):
        return "prompt"
    if base in {"agent", "model", "policy", *_SAMPLING}:
        return base
    return NON_FIELD


@permission_required(Permission.JOBS_WRITE)
@never_cache
def job_submit_page(request: HttpRequest) -> HttpResponse:
    """Submit a prompt to a model (or a policy) or to an agent: validated as the API validates it,
    submitted by the same service; the job's page then follows it."""
    specs = _submit_specs(request)
    names = [spec.name for spec in specs]
    errors: dict[str, list[str]] = {}
    if request.method != "POST":
        values = {name: request.GET.get(name, "") if name == "agent" else "" for name in names}
        return _submit_render(request, specs, values, errors, status=200)
    values = {name: request.POST.get(name, "") for name in names}
    submission = _Submission(request)
    if not submission.claim():
        # The same form sent twice (a double click, a reload after the answer): one job, not two.
        earlier = submission.job_id()
        if earlier is not None:
            messages.info(request, "This form was already sent: here is the job it submitted.")
            return redirect("portal-job", job_id=earlier)
        errors[NON_FIELD] = ["This form is being sent already; wait a moment for its job."]
        return _submit_render(request, specs, values, errors, status=409, submission=submission.token)
    body = _job_input(values, errors)
    if not errors:
        data = JobInput(data=body)
        if data.is_valid():
            try:
                job = _submitted(request, dict(data.validated_data), errors)
            except Exception:
                submission.release()
                raise
            if job is not None:
                submission.done(job.pk)
                messages.success(request, "Job submitted: its progress shows below.")
                return redirect("portal-job", job_id=job.pk)
        else:
            for name, texts in error_messages(data.errors).items():
                errors.setdefault(_field_of(name), []).extend(texts)
    submission.release()  # refused: the same form, corrected, may be sent again
    return _submit_render(request, specs, values, errors, status=400, submission=submission.token)


class _Submission:
    """A submit form's one-time token (a hidden field): the first POST of a rendered form claims it
    (atomically, in Redis, per organization), and a second POST of the same form finds the job the
    first one submitted instead of submitting another."""

    def __init__(self, request: HttpRequest) -> None:
        posted = request.POST.get("submission", "")
        self.token = posted if _TOKEN.fullmatch(posted) else ""
        self.key = f"portal:job-form:{caller_organization(request).pk}:{self.token}"

    def claim(self) -> bool:
        return not self.token or bool(redis_client().set(self.key, "", nx=True, ex=SUBMISSION_SECONDS))

    def job_id(self) -> uuid.UUID | None:
        value = redis_client().get(self.key)
        try:
            return uuid.UUID(value.decode() if isinstance(value, bytes) else str(value)) if value else None
        except ValueError:
            return None

    def done(self, job_id: uuid.UUID) -> None:
        if self.token:
            redis_client().set(self.key, str(job_id), ex=SUBMISSION_SECONDS)

    def release(self) -> None:
        if self.token:
            redis_client().delete(self.key)


def _submitted(request: HttpRequest, fields: dict[str, Any], errors: dict[str, list[str]]) -> Job | None:
    agent = None
    if "agent" in fields:
        agent = agent_find(reference=fields.pop("agent"))
        if agent is None:
            errors["agent"] = ["No such agent in this organization (deleted meanwhile?)."]
            return None
    try:
        return job_submit(
            organization=caller_organization(request), principal=caller_principal(request), request=fields, agent=agent
        )
    except Refusal as refused:  # an unknown model, a field the engine refuses: said at the field
        errors.setdefault(_field_of(refused.param), []).append(refused.request_message())
        return None


def _submit_render(
    request: HttpRequest,
    specs: list[FieldSpec],
    values: dict[str, str],
    errors: dict[str, list[str]],
    *,
    status: int,
    submission: str = "",
) -> HttpResponse:
    return render(
        request,
        "portal/jobs/submit.html",
        {
            "organization": caller_organization(request),
            "submission": submission or secrets.token_urlsafe(16),
            **_field_groups(bind(specs, values, errors)),
            "form_errors": unplaced_errors(specs, errors),
        },
        status=status,
    )


def _field_groups(fields: list[BoundField]) -> dict[str, list[BoundField]]:
    """The form's fields, and its numbers (shown side by side)."""
    return {
        "fields": [field for field in fields if field.spec.kind != "number"],
        "number_fields": [field for field in fields if field.spec.kind == "number"],
    }


# -- a job ----------------------------------------------------------------------------------------


def _job(job_id: uuid.UUID) -> Job:
    return job_get(job_id=job_id)  # another organization's job is absent from this schema: 404


def _text(content: Any) -> str:
    """A message's content as shown: text, or the parts of a multi-part message as JSON."""
    return content if isinstance(content, str) else json.dumps(content, indent=2, ensure_ascii=False)


# The request's fields a job's page shows, with their labels.
_PARAMETERS = {
    "model": "Model",
    "policy": "Routing policy",
    "min_quality": "Minimum quality",
    "temperature": "Temperature",
    "top_p": "Top p",
    "max_tokens": "Max tokens",
    "max_completion_tokens": "Max tokens",
    "max_cost_usd": "Max cost (USD)",
    "seed": "Seed",
}


def _detail_context(job: Job) -> dict[str, Any]:
    request = job.request or {}
    result = job.result or {}
    parameters = [(label, request[name]) for name, label in _PARAMETERS.items() if request.get(name) not in (None, "")]
    return {
        "job": job,
        "model": _OUTPUT.get_model(job),
        "timings": _OUTPUT.get_timings(job),
        "parameters": parameters,
        # Not `messages`: the flash messages of the page have that name.
        "input_messages": [
            {"role": str(message.get("role", "")), "content": _text(message.get("content"))}
            for message in (request.get("messages") or [])
            if isinstance(message, dict)
        ],
        "result": result,
        "usage": result.get("usage") or {},
    }


@permission_required(Permission.JOBS_READ)
@never_cache
@require_GET
def job_detail(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    """A job: its input, its result (when the content policy kept it), cost, timings, runs and
    error; while it runs, followed live."""
    job = _job(job_id)
    return render(
        request,
        "portal/jobs/detail.html",
        {
            "organization": caller_organization(request),
            **_detail_context(job),
            "may_write": member_may(request, Permission.JOBS_WRITE),
        },
    )


@permission_required(Permission.JOBS_READ)
@never_cache
@require_GET
def job_events(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse | StreamingHttpResponse:
    """The job's live part of its page, as server-sent events from the runtime's progress stream
    (the same stream as the API's /jobs/<id>/events, with the page's fragment as data)."""
    job_id = _job(job_id).pk

    def poll() -> tuple[list[tuple[str, str, Any]], bool] | None:
        job = Job.objects.select_related("agent").filter(pk=job_id).first()
        if job is None:
            return None
        html = render_to_string("portal/jobs/_progress.html", _detail_context(job))
        return [("job", "status", {"status": job.status, "finished": job.is_finished, "html": html})], job.is_finished

    try:
        stream: StreamingHttpResponse = progress_stream(
            organization=caller_organization(request), topic="job", object_id=job_id, poll=poll
        )
    except ApiError as busy:  # every long-response slot taken: the browser's EventSource retries
        response = HttpResponse(str(busy), status=busy.status_code, content_type="text/plain")
        for header, value in busy.extra_headers.items():
            response[header] = value
        return response
    return stream


@permission_required({"POST": Permission.JOBS_WRITE})
@require_POST
def job_cancel_page(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    job = _job(job_id)
    try:
        job_cancel(organization=caller_organization(request), actor=caller_principal(request), job=job)
    except JobFinished as finished:
        messages.warning(request, f"The job had already ended ({finished}): nothing to cancel.")
    else:
        messages.success(request, "Job cancelled. A call already in flight completes, but its answer is not kept.")
    return redirect("portal-job", job_id=job.pk)


urlpatterns: list[URLPattern] = [
    path("jobs/", jobs, name="portal-jobs"),
    path("jobs/live/", jobs_live, name="portal-jobs-live"),
    path("jobs/new/", job_submit_page, name="portal-job-submit"),
    path("jobs/<uuid:job_id>/", job_detail, name="portal-job"),
    path("jobs/<uuid:job_id>/events/", job_events, name="portal-job-events"),
    path("jobs/<uuid:job_id>/cancel/", job_cancel_page, name="portal-job-cancel"),
]
