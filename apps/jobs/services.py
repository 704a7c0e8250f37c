"""Jobs: submit, cancel, and what a job's run does. Admission, claim, heartbeats, retries, the
reaper and content retention are the runtime's (apps.work), for which `JOB` is the kind; agents and
the request they shape (`job_request_build`) are apps.agents'."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import F

from apps.accounts.principals import Principal
from apps.agents.models import Agent
from apps.agents.services import job_request_build
from apps.audit.services import audit_record
from apps.billing.selectors import plan_limit
from apps.jobs.models import Job, JobStatus
from apps.knowledge.search import MAX_QUERY_CHARS, MAX_TOP_K, Hit, knowledge_search
from apps.llm.calls import CallSource, ChatOutcome, attempts_abandon, chat_call_parse, chat_complete
from apps.tenants.models import Organization
from apps.webhooks.services import webhook_event_emit
from apps.work.principals import principal_fields, principal_from_fields
from apps.work.registry import WorkKind
from apps.work.services import work_admit, work_execute, work_finish


class JobFinished(Exception):
    """The job already ended; it can't be cancelled."""


@transaction.atomic
def job_submit(
    *,
    organization: Organization,
    principal: Principal,
    request: dict[str, Any],
    agent: Agent | None = None,
    webhook_endpoint_id: UUID | None = None,
) -> Job:
    """Create a job; it goes to the queue once the organization's concurrency cap admits it."""
    job = Job.objects.create(
        request=job_request_build(request=request, agent=agent),
        agent=agent,
        webhook_endpoint_id=webhook_endpoint_id,
        **principal_fields(principal),
    )
    audit_record(
        organization=organization,
        actor=principal,
        action="job.submitted",
        target=job,
        metadata={"model": job.request.get("model") or job.request.get("policy")},
    )
    work_admit(organization=organization, kind=JOB, waiting=True)
    return job


def _concurrency_cap(organization: Organization) -> int:
    return plan_limit(organization, "concurrent_jobs")


@transaction.atomic
def job_cancel(*, organization: Organization, actor: Principal, job: Job) -> Job:
    """Cancel a job that has not finished. A call already in flight completes and is billed, but
    its answer is not kept; a waiting job never reaches a worker."""
    cancelled = work_finish(
        organization=organization,
        kind=JOB,
        item=job,
        status=JobStatus.CANCELLED,
        error=("cancelled", f"cancelled by {actor.label}"),
    )
    if not cancelled:
        job.refresh_from_db()
        raise JobFinished(job.status)
    audit_record(organization=organization, actor=actor, action="job.cancelled", target=job)
    return job


def _request_id(job: Job, attempt: int) -> str:
    return f"job-{job.id.hex}-{attempt}"


def _abandon(organization: Organization, job: Job, attempts: list[int]) -> None:
    """Settle the open calls of runs that died, from their reservations."""
    attempts_abandon(organization=organization, request_ids=[_request_id(job, n) for n in attempts])


_CONTENT_FIELDS = ("messages", "prompt", "text", "tool_calls")


def _without_content(document: dict[str, Any] | None) -> dict[str, Any] | None:
    if document is None:
        return None
    return {key: (None if key in _CONTENT_FIELDS else value) for key, value in document.items()}


def _result(outcome: ChatOutcome) -> dict[str, Any]:
    choice = (outcome.body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    return {
        "text": message.get("content"),
        "tool_calls": message.get("tool_calls"),
        "finish_reason": choice.get("finish_reason"),
        "usage": outcome.body.get("usage"),
        "cost_usd": str(outcome.cost_usd),
        "model": outcome.model,
        "cache": outcome.cache,
        "simulated": outcome.simulated,
        "request_id": outcome.request_id,
    }


def job_execute(*, organization: Organization, job_id: UUID) -> None:
    """Run a job on this worker (apps.work claims it, keeps its heartbeat, retries or fails it).

    Safe to deliver twice: a finished job, or one a live worker holds, is left alone; a job whose
    earlier worker died has that run's open attempts settled before it calls again.
    """
    work_execute(organization=organization, kind=JOB, item_id=job_id)


def _job_run(organization: Organization, job: Job) -> None:
    """One governed engine call whose answer commits with its ledger row (the claimed run)."""
    request_id = _request_id(job, job.attempts)
    retrieval_cost = Decimal(0)

    def record(outcome: ChatOutcome) -> None:
        outcome = dataclasses.replace(outcome, cost_usd=outcome.cost_usd + retrieval_cost)
        succeeded = work_finish(
            organization=organization,
            kind=JOB,
            item=job,
            status=JobStatus.SUCCEEDED,
            values={"result": _result(outcome), "cost_usd": outcome.cost_usd},
            attempt=job.attempts,
        )
        if not succeeded:
            # Cancelled (or taken over) while the call ran: the ledger has the cost, the job adds
            # it to what it spent; the answer is dropped.
            Job.objects.filter(pk=job.pk).update(cost_usd=F("cost_usd") + outcome.cost_usd)

    request = job.request
    agent = job.agent if job.agent_id else None
    if agent is not None:
        request, retrieval_cost = _with_knowledge(organization, job, agent, request_id)
    chat_complete(
        organization=organization,
        principal=principal_from_fields(job),
        call=chat_call_parse(request),
        request_id=request_id,
        on_settled=record,
        source=CallSource.JOB,
    )


def _with_knowledge(
    organization: Organization, job: Job, agent: Agent, request_id: str
) -> tuple[dict[str, Any], Decimal]:
    """The job's request with the best chunks of the agent's knowledge bases for its question as
    context, and what embedding the question cost (a ledger row per knowledge base, source
    `retrieval`, under request ids fixed by the attempt: a redelivered attempt doesn't pay twice)."""
    bases = list(agent.knowledge_bases.select_related("active_set").order_by("pk"))
    messages = list(job.request.get("messages") or [])
    question = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), None)
    # A question longer than a search takes is searched by its end, nearest the ask.
    query = question.replace("\x00", "").strip()[-MAX_QUERY_CHARS:].strip() if isinstance(question, str) else ""
    if not bases or not query:
        return job.request, Decimal(0)
    top_k = max(1, min(agent.retrieval_top_k, MAX_TOP_K))
    cost = Decimal(0)
    hits: list[Hit] = []
    for index, base in enumerate(bases):
        found = knowledge_search(
            organization=organization,
            principal=principal_from_fields(job),
            knowledge_base=base,
            query=query,
            top_k=top_k,
            request_id=f"{request_id}.rag" if index == 0 else f"{request_id}.rag{index}",
        )
        cost += found.cost_usd
        hits.extend(found.hits)
    # Hybrid scores are reciprocal ranks, comparable across knowledge bases.
    hits = sorted(hits, key=lambda hit: -hit.score)[:top_k]
    if not hits:
        return job.request, cost
    context = "\n\n".join(f"[{hit.document_title} #{hit.ordinal}] {hit.text}" for hit in hits)
    knowledge = {
        "role": "system",
        "content": f"Answer from these excerpts of the organization's documents:\n\n{context}",
    }
    return {**job.request, "messages": [knowledge, *messages]}, cost


def _emit(organization: Organization, job: Job) -> None:
    """The job's webhook event, sent after commit by the webhooks app."""
    webhook_event_emit(
        organization=organization,
        event_type=f"job.{job.status}",
        payload={"job": {"id": str(job.id), "status": job.status, "cost_usd": str(job.cost_usd), "result": job.result}},
        endpoint_id=job.webhook_endpoint_id,
    )


JOB = WorkKind(
    name="job",
    model=Job,
    execute=_job_run,
    on_finished=_emit,
    abandon=_abandon,
    content_fields=(("request", _without_content), ("result", _without_content)),
    cap=_concurrency_cap,
)
