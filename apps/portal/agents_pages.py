"""The portal's agents pages (issue 12): list, create, edit, delete (after a confirmation page).

Input is validated by the REST API's serializer (apps.agents.api.AgentSerializer: the table's
ranges, one of model or policy, a unique name) and written by the same services (`agent_create`,
`agent_update`, `agent_delete`). Seeing agents needs jobs:read; changing them jobs:write.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from django.contrib import messages
from django.db import IntegrityError
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import URLPattern, path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.agents.api import AgentSerializer
from apps.agents.models import POLICIES, Agent
from apps.agents.selectors import agent_get
from apps.agents.services import AgentFields, agent_create, agent_delete, agent_update
from apps.knowledge.models import KnowledgeBase
from apps.llm.calls import chat_model_choices
from apps.portal.caller import caller_organization, caller_principal
from apps.portal.form_fields import FieldSpec, bind, error_messages, unplaced_errors
from apps.portal.paging import keyset_page_by_time
from apps.rbac.decorators import member_may, permission_required
from apps.rbac.permissions import Permission

# A form's long texts: the page's own bound (the API's is the request body's size).
TEXT_MAX_CHARS = 20_000

_FIELDS = (
    FieldSpec(
        "name",
        "Name",
        help="Unique in the organization; jobs and workflow steps name the agent by it.",
        attrs={"maxlength": "100", "autocomplete": "off"},
    ),
    FieldSpec(
        "description", "Description (optional)", kind="textarea", attrs={"rows": "2", "maxlength": str(TEXT_MAX_CHARS)}
    ),
    FieldSpec(
        "system_prompt",
        "System prompt",
        kind="textarea",
        help="Sent first in every job the agent runs.",
        attrs={"rows": "6", "maxlength": str(TEXT_MAX_CHARS)},
    ),
    FieldSpec(
        "model",
        "Model",
        help="A model of the catalog, e.g. gpt-4o-mini; or leave it empty and choose a policy.",
        attrs={"maxlength": "100", "autocomplete": "off", "spellcheck": "false"},
    ),
    FieldSpec(
        "policy",
        "Routing policy",
        kind="select",
        help="Instead of a model: the router chooses one per call.",
        options=(("", "None"), *((policy, policy.title()) for policy in POLICIES)),
    ),
    FieldSpec(
        "min_quality",
        "Minimum quality",
        kind="number",
        help="1 to 5, for a routing policy",
        attrs={"min": "1", "max": "5", "step": "1"},
    ),
    FieldSpec(
        "temperature",
        "Temperature",
        kind="number",
        help="0 to 2; empty: the model's default",
        attrs={"min": "0", "max": "2", "step": "0.1"},
    ),
    FieldSpec(
        "max_tokens",
        "Max tokens",
        kind="number",
        help="Longest answer; empty: no limit of the agent's",
        attrs={"min": "1", "step": "1"},
    ),
    FieldSpec(
        "max_cost_usd",
        "Max cost (USD)",
        kind="number",
        help="Per job; empty: no limit of the agent's",
        attrs={"min": "0", "step": "0.000001"},
    ),
    FieldSpec(
        "retrieval_top_k",
        "Excerpts retrieved",
        kind="number",
        help="From the agent's knowledge bases, per question",
        attrs={"min": "1", "max": "50", "step": "1"},
    ),
)
_NAMES = tuple(spec.name for spec in _FIELDS)
# The knowledge bases field: checkboxes of the organization's knowledge bases (form.html).
KNOWLEDGE_FIELD = "knowledge_base_ids"


def _too_long(data: QueryDict) -> dict[str, list[str]]:
    return {
        name: [f"At most {TEXT_MAX_CHARS:,} characters."]
        for name in ("description", "system_prompt")
        if len(data.get(name, "")) > TEXT_MAX_CHARS
    }


def _values_of(agent: Agent | None) -> dict[str, Any]:
    if agent is None:
        return {"min_quality": 1, "retrieval_top_k": 4, KNOWLEDGE_FIELD: []}
    return {
        **{name: getattr(agent, name) for name in _NAMES},
        KNOWLEDGE_FIELD: [str(pk) for pk in agent.knowledge_bases.values_list("pk", flat=True)],
    }


def _knowledge_data(request: HttpRequest) -> QueryDict:
    """The form's data with the knowledge bases always present: no box checked means none (a
    partial update would otherwise keep them)."""
    data = request.POST.copy()
    data.setlist(KNOWLEDGE_FIELD, request.POST.getlist(KNOWLEDGE_FIELD))
    return data


def _form_page(
    request: HttpRequest,
    *,
    agent: Agent | None,
    values: dict[str, Any],
    errors: dict[str, list[str]],
    status: int,
) -> HttpResponse:
    suggestions = tuple(choice.name for choice in chat_model_choices(organization=caller_organization(request)))
    specs = [dataclasses.replace(spec, suggestions=suggestions) if spec.name == "model" else spec for spec in _FIELDS]
    fields = bind(specs, values, errors)
    chosen = set(values.get(KNOWLEDGE_FIELD) or ())
    knowledge_bases = [
        {"id": str(pk), "name": name, "checked": str(pk) in chosen}
        for pk, name in KnowledgeBase.objects.order_by("name").values_list("pk", "name")
    ]
    return render(
        request,
        "portal/agents/form.html",
        {
            "organization": caller_organization(request),
            "agent": agent,
            "fields": [field for field in fields if field.spec.kind != "number"],
            "number_fields": [field for field in fields if field.spec.kind == "number"],
            "form_errors": unplaced_errors(_FIELDS, {k: v for k, v in errors.items() if k != KNOWLEDGE_FIELD}),
            "knowledge_bases": knowledge_bases,
            "knowledge_errors": errors.get(KNOWLEDGE_FIELD, []),
            "may_write": member_may(request, Permission.JOBS_WRITE),
        },
        status=status,
    )


def _posted(request: HttpRequest) -> dict[str, Any]:
    return {
        **{name: request.POST.get(name, "") for name in _NAMES},
        KNOWLEDGE_FIELD: request.POST.getlist(KNOWLEDGE_FIELD),
    }


def _duplicate(name: str) -> dict[str, list[str]]:
    # Two people saving the same name at once: the unique index decides, said at the field.
    return {"name": [f"an agent named {name!r} already exists"]}


@permission_required(Permission.JOBS_READ)
@never_cache
@require_GET
def agents(request: HttpRequest) -> HttpResponse:
    agents = Agent.objects.defer("system_prompt", "description").annotate(knowledge_base_count=Count("knowledge_bases"))
    page = keyset_page_by_time(agents, request=request)
    return render(
        request,
        "portal/agents/list.html",
        {
            "organization": caller_organization(request),
            "page": page,
            "may_write": member_may(request, Permission.JOBS_WRITE),
        },
    )


@permission_required(Permission.JOBS_WRITE)
@never_cache
def agent_create_page(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _form_page(request, agent=None, values=_values_of(None), errors={}, status=200)
    errors = _too_long(request.POST)
    data = AgentSerializer(data=_knowledge_data(request))
    if not errors and data.is_valid():
        fields = dict(data.validated_data)
        fields["knowledge_bases"] = tuple(fields.get("knowledge_bases", ()))
        try:
            agent = agent_create(
                organization=caller_organization(request), actor=caller_principal(request), fields=AgentFields(**fields)
            )
        except IntegrityError:
            errors = _duplicate(fields["name"])
        else:
            messages.success(request, f"Agent “{agent.name}” created.")
            return redirect("portal-agents")
    elif not errors:
        errors = error_messages(data.errors)
    return _form_page(request, agent=None, values=_posted(request), errors=errors, status=400)


@permission_required({"GET": Permission.JOBS_READ, "POST": Permission.JOBS_WRITE})
@never_cache
def agent_page(request: HttpRequest, agent_id: uuid.UUID) -> HttpResponse:
    """An agent: its settings (a member who may change agents edits them here)."""
    agent = agent_get(agent_id=agent_id)  # another organization's agent is absent here: 404
    if request.method != "POST":
        return _form_page(request, agent=agent, values=_values_of(agent), errors={}, status=200)
    errors = _too_long(request.POST)
    # Partial, as the API's PATCH; the knowledge bases are always on this form (none checked: none).
    data = AgentSerializer(agent, data=_knowledge_data(request), partial=True)
    if not errors and data.is_valid():
        changes = dict(data.validated_data)
        try:
            agent = agent_update(
                organization=caller_organization(request),
                actor=caller_principal(request),
                agent=agent,
                changes=changes,
            )
        except IntegrityError:
            errors = _duplicate(str(changes.get("name", "")))
        else:
            messages.success(request, f"Agent “{agent.name}” saved.")
            return redirect("portal-agents")
    elif not errors:
        errors = error_messages(data.errors)
    return _form_page(request, agent=agent, values=_posted(request), errors=errors, status=400)


@permission_required(Permission.JOBS_WRITE)
@never_cache
def agent_delete_page(request: HttpRequest, agent_id: uuid.UUID) -> HttpResponse:
    """Asks first (GET), deletes on the confirmation's POST. Its jobs stay, without the agent."""
    agent = agent_get(agent_id=agent_id)
    if request.method != "POST":
        return render(
            request,
            "portal/agents/delete.html",
            {"organization": caller_organization(request), "agent": agent, "jobs_count": agent.jobs.count()},
        )
    name = agent.name
    agent_delete(organization=caller_organization(request), actor=caller_principal(request), agent=agent)
    messages.success(request, f"Agent “{name}” deleted.")
    return redirect("portal-agents")


urlpatterns: list[URLPattern] = [
    path("agents/", agents, name="portal-agents"),
    path("agents/new/", agent_create_page, name="portal-agent-create"),
    path("agents/<uuid:agent_id>/", agent_page, name="portal-agent"),
    path("agents/<uuid:agent_id>/delete/", agent_delete_page, name="portal-agent-delete"),
]
