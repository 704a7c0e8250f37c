"""Agents: create, change, delete, and what an agent makes of a request (`job_request_build`, for
jobs and workflow `llm` steps alike)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import transaction

from apps.accounts.principals import Principal
from apps.agents.models import Agent
from apps.audit.services import audit_record
from apps.knowledge.models import KnowledgeBase
from apps.llm.calls import LlmRefusal, chat_call_parse, model_exists
from apps.tenants.models import Organization


@dataclass(frozen=True)
class AgentFields:
    name: str
    description: str = ""
    system_prompt: str = ""
    model: str = ""
    policy: str = ""
    min_quality: int = 1
    temperature: float | None = None
    max_tokens: int | None = None
    knowledge_bases: tuple[KnowledgeBase, ...] = ()
    retrieval_top_k: int = 4
    max_cost_usd: Decimal | None = None


@transaction.atomic
def agent_create(*, organization: Organization, actor: Principal, fields: AgentFields) -> Agent:
    values = {name: value for name, value in fields.__dict__.items() if name != "knowledge_bases"}
    agent = Agent.objects.create(**values, created_by_label=actor.label)
    agent.knowledge_bases.set(fields.knowledge_bases)
    audit_record(organization=organization, actor=actor, action="agent.created", target=agent)
    return agent


@transaction.atomic
def agent_update(*, organization: Organization, actor: Principal, agent: Agent, changes: dict[str, Any]) -> Agent:
    for name, value in changes.items():
        if name != "knowledge_bases":
            setattr(agent, name, value)
    agent.save()
    if "knowledge_bases" in changes:
        agent.knowledge_bases.set(changes["knowledge_bases"])
    audit_record(
        organization=organization,
        actor=actor,
        action="agent.updated",
        target=agent,
        metadata={"fields": sorted(changes)},
    )
    return agent


@transaction.atomic
def agent_delete(*, organization: Organization, actor: Principal, agent: Agent) -> None:
    audit_record(organization=organization, actor=actor, action="agent.deleted", target=agent)
    agent.delete()


def job_request_build(*, request: dict[str, Any], agent: Agent | None) -> dict[str, Any]:
    """The engine request for a job or a workflow `llm` step: the submitted fields over the agent's
    defaults. Raises LlmRefusal (400) for what the engine would refuse, before anything is written."""
    body = {key: value for key, value in request.items() if value is not None}
    if "prompt" in body:
        body["messages"] = [{"role": "user", "content": body.pop("prompt")}]
    if agent is not None:
        if "model" not in body and "policy" not in body:
            body.update({"model": agent.model} if agent.model else {"policy": agent.policy})
            body.setdefault("min_quality", agent.min_quality)
        if agent.temperature is not None:
            body.setdefault("temperature", agent.temperature)
        if agent.max_tokens is not None and "max_completion_tokens" not in body:
            body.setdefault("max_tokens", agent.max_tokens)
        if agent.max_cost_usd is not None:
            body.setdefault("max_cost_usd", str(agent.max_cost_usd))
        if agent.system_prompt and isinstance(body.get("messages"), list):
            body["messages"] = [{"role": "system", "content": agent.system_prompt}, *body["messages"]]
    if "max_cost_usd" in body:
        body["max_cost_usd"] = str(body["max_cost_usd"])
    if body.get("stream"):
        raise LlmRefusal(
            400, "unsupported_parameter", "jobs don't stream; poll the job or follow its events", param="stream"
        )
    call = chat_call_parse(body)
    if call.model is not None and not model_exists(call.model):
        raise LlmRefusal(
            400, "model_not_found", f"the model {call.model!r} does not exist or is not available", param="model"
        )
    return body
