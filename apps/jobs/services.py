"""Jobs and agents: submit, admit (fair per organization), run, cancel, reap."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import redis
from django.conf import settings
from django.db import OperationalError as DjangoOperationalError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.accounts.principals import Principal
from apps.audit.services import audit_record
from apps.jobs.admission import waiting_admit
from apps.jobs.heartbeat import heartbeats
from apps.jobs.models import FINISHED, Agent, Job, JobStatus
from apps.knowledge.selectors import chunks_search
from apps.llm.budgets import attempts_abandon
from apps.llm.calls import ChatOutcome, LlmRefusal, chat_call_parse, chat_complete
from apps.llm.platform.selectors import catalog
from apps.llm.selectors import llm_content_policy
from apps.tenants.models import Organization

logger = logging.getLogger(__name__)


class JobFinished(Exception):
    """The job already ended; it can't be cancelled."""


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
    knowledge_document_ids: tuple[int, ...] = ()
    retrieval_top_k: int = 4
    max_cost_usd: Decimal | None = None


def _principal_fields(principal: Principal) -> dict[str, str]:
    return {"principal_kind": principal.kind, "principal_id": principal.id or "", "principal_label": principal.label}


def job_principal(job: Job) -> Principal:
    return Principal(kind=job.principal_kind, id=job.principal_id or None, label=job.principal_label)  # type: ignore[arg-type]


@transaction.atomic
def agent_create(*, organization: Organization, actor: Principal, fields: AgentFields) -> Agent:
    agent = Agent.objects.create(
        **{**fields.__dict__, "knowledge_document_ids": list(fields.knowledge_document_ids)},
        created_by_label=actor.label,
    )
    audit_record(organization=organization, actor=actor, action="agent.created", target=agent)
    return agent


@transaction.atomic
def agent_update(*, organization: Organization, actor: Principal, agent: Agent, changes: dict[str, Any]) -> Agent:
    for name, value in changes.items():
        setattr(agent, name, list(value) if name == "knowledge_document_ids" else value)
    agent.save()
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
    """The engine request for a job: the submitted fields over the agent's defaults. Raises
    LlmRefusal (400) for what the engine would refuse, before anything is written."""
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
    if call.model is not None and call.model not in catalog():
        raise LlmRefusal(
            400, "model_not_found", f"the model {call.model!r} does not exist or is not available", param="model"
        )
    return body


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
        **_principal_fields(principal),
    )
    audit_record(
        organization=organization,
        actor=principal,
        action="job.submitted",
        target=job,
        metadata={"model": job.request.get("model") or job.request.get("policy")},
    )
    jobs_admit(organization=organization, waiting=True)
    return job


def _concurrency_cap(organization: Organization) -> int:
    return int(organization.plan.limit("max_concurrent_jobs"))


def jobs_admit(*, organization: Organization, waiting: bool = False) -> list[UUID]:
    """Send the oldest waiting jobs to the queue while fewer than the plan's cap are admitted and
    unfinished. The queue never holds more than the cap for one organization, so one that floods it
    can't starve the others (apps.jobs.admission). (A job that
    starts waiting while another ends may wait for the reaper's next admission, within seconds.)
    `waiting`: the caller knows a job waits (it just created one), so the cheap check is skipped."""
    if not waiting and not Job.objects.filter(status=JobStatus.QUEUED, admitted_at__isnull=True).exists():
        return []
    ids = waiting_admit(table=Job._meta.db_table, cap=_concurrency_cap(organization))
    if ids:
        transaction.on_commit(lambda: _dispatch(organization, ids))
    return ids


def _dispatch(organization: Organization, ids: list[UUID], countdown: float | None = None) -> None:
    from apps.jobs.tasks import job_run

    for job_id in ids:
        job_run.apply_async(kwargs={"tenant_id": organization.pk, "job_id": str(job_id)}, countdown=countdown)


@transaction.atomic
def job_cancel(*, organization: Organization, actor: Principal, job: Job) -> Job:
    """Cancel a job that has not finished. A call already in flight completes and is billed, but
    its answer is not kept; a waiting job never reaches a worker."""
    job = Job.objects.select_for_update().get(pk=job.pk)
    if job.is_finished:
        raise JobFinished(job.status)
    job.status, job.finished_at = JobStatus.CANCELLED, timezone.now()
    job.error_class, job.error_message = "cancelled", f"cancelled by {actor.label}"
    job.save(update_fields=["status", "finished_at", "error_class", "error_message"])
    audit_record(organization=organization, actor=actor, action="job.cancelled", target=job)
    jobs_admit(organization=organization)
    _emit(organization, job)
    return job


def _request_id(job: Job, run: int) -> str:
    return f"job-{job.id.hex}-{run}"


_CLAIM = """
    UPDATE jobs_job
       SET status = 'running', heartbeat_at = %(now)s, runs = runs + 1,
           started_at = COALESCE(started_at, %(now)s), admitted_at = COALESCE(admitted_at, %(now)s)
     WHERE id = %(id)s AND runs < %(max_runs)s
       AND (status = 'queued' OR (status = 'running' AND heartbeat_at < %(alive_after)s))
 RETURNING *
"""


def _job_start(*, organization: Organization, job_id: UUID) -> Job | None:
    """Take the job for this worker, or None if it ended or another live worker has it."""
    now = timezone.now()
    alive_after = now - dt.timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_SECONDS)
    # The usual case in one statement: a queued job, or one whose worker stopped beating.
    params = {"id": job_id, "now": now, "alive_after": alive_after, "max_runs": settings.JOB_MAX_RUNS}
    job = next(iter(Job.objects.raw(_CLAIM, params)), None)
    if job is not None:
        if job.runs > 1:
            # An earlier run died: settle its open attempts from their reservations first.
            attempts_abandon(organization=organization, request_ids=[_request_id(job, n) for n in range(1, job.runs)])
        return job
    with transaction.atomic():
        dead = (
            Job.objects.select_for_update()
            .filter(pk=job_id, runs__gte=settings.JOB_MAX_RUNS)
            .exclude(status__in=FINISHED)
            .exclude(status=JobStatus.RUNNING, heartbeat_at__gte=alive_after)
            .first()
        )
        if dead is not None:  # its workers died too often: fail it rather than run it again
            attempts_abandon(
                organization=organization, request_ids=[_request_id(dead, n) for n in range(1, dead.runs + 1)]
            )
            _finish(organization, dead, JobStatus.FAILED, error=("WorkerLost", f"its worker died {dead.runs} times"))
    return None  # finished, unknown, or held by a live worker (a redelivered message)


def _finish(
    organization: Organization,
    job: Job,
    status: JobStatus,
    *,
    outcome: ChatOutcome | None = None,
    error: tuple[str, str] | None = None,
    run: int | None = None,
) -> bool:
    """Record the end of a job that has not ended (and, with `run`, that this run still owns),
    inside the caller's transaction; admit the next waiting job. False if it had ended already."""
    values: dict[str, Any] = {"status": status, "finished_at": timezone.now()}
    if outcome is not None:
        values.update(result=_result(outcome), cost_usd=outcome.cost_usd)
    if error is not None:
        values.update(error_class=error[0][:100], error_message=error[1])
    if not llm_content_policy(organization=organization).store_content:
        values.update(
            request=_without_content(job.request),
            result=_without_content(values.get("result", job.result)),
            content_removed=True,
        )
    unfinished = Job.objects.filter(pk=job.pk).exclude(status__in=FINISHED)
    if run is not None:
        unfinished = unfinished.filter(status=JobStatus.RUNNING, runs=run)
    if not unfinished.update(**values):
        return False
    for name, value in values.items():
        setattr(job, name, value)
    jobs_admit(organization=organization)
    _emit(organization, job)
    return True


_CONTENT_FIELDS = ("messages", "prompt", "text", "tool_calls")


def _without_content(document: dict[str, Any] | None) -> dict[str, Any] | None:
    if document is None:
        return None
    return {key: (None if key in _CONTENT_FIELDS else value) for key, value in document.items()}


def jobs_content_expire(*, organization: Organization, now: dt.datetime | None = None) -> int:
    """Remove prompts and answers of jobs that ended longer ago than the organization keeps content."""
    policy = llm_content_policy(organization=organization)
    cutoff = (now or timezone.now()) - dt.timedelta(days=policy.retention_days)
    expired = Job.objects.filter(content_removed=False, finished_at__isnull=False)
    if policy.store_content:
        expired = expired.filter(finished_at__lt=cutoff)
    removed = 0
    for job in expired.only("id", "request", "result").iterator(chunk_size=500):
        Job.objects.filter(pk=job.pk).update(
            request=_without_content(job.request), result=_without_content(job.result), content_removed=True
        )
        removed += 1
    return removed


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
    """Run a job on this worker: one governed engine call whose answer commits with its ledger row.

    Safe to deliver twice: a finished job, or one a live worker holds, is left alone; a job whose
    earlier worker died has that run's open attempts settled before it calls again.
    """
    job = _job_start(organization=organization, job_id=job_id)
    if job is None:
        return
    request_id = _request_id(job, job.runs)
    retrieval_cost = Decimal(0)

    def record(outcome: ChatOutcome) -> None:
        outcome = dataclasses.replace(outcome, cost_usd=outcome.cost_usd + retrieval_cost)
        if not _finish(organization, job, JobStatus.SUCCEEDED, outcome=outcome, run=job.runs):
            # Cancelled (or taken over) while the call ran: the ledger has the cost, the job adds
            # it to what it spent; the answer is dropped.
            Job.objects.filter(pk=job.pk).update(cost_usd=F("cost_usd") + outcome.cost_usd)

    with heartbeats.running(organization.schema_name, job.pk):
        try:
            request = job.request
            agent = job.agent if job.agent_id else None
            if agent is not None and agent.knowledge_document_ids:
                request, retrieval_cost = _with_knowledge(organization, job, agent, request_id)
            chat_complete(
                organization=organization,
                principal=job_principal(job),
                call=chat_call_parse(request),
                request_id=request_id,
                on_settled=record,
            )
        except LlmRefusal as error:
            if error.retryable and job.runs < settings.JOB_MAX_RUNS:
                job_retry_later(organization=organization, job=job, error_class=error.code)
            else:
                job_fail(organization=organization, job=job, error_class=error.code, message=error.message)
        except (redis.RedisError, OSError) as error:
            # Redis (rate limits, breaker, caches) stalled or dropped us: a transient outage.
            logger.warning("job %s: redis unavailable", job.pk, exc_info=True)
            if job.runs < settings.JOB_MAX_RUNS:
                job_retry_later(organization=organization, job=job, error_class=type(error).__name__)
            else:
                job_fail(organization=organization, job=job, error_class=type(error).__name__, message=str(error))
        except (DjangoOperationalError, psycopg.OperationalError):
            # The database is unreachable or its pool exhausted: nothing can be recorded now. The
            # heartbeat stops with this run, and the reaper requeues the job once it can.
            logger.warning("job %s stopped: the database could not be reached", job.pk, exc_info=True)
            raise
        except Exception as error:
            # A bug of ours, not the provider's: fail the job now (its attempts are settled or swept)
            # rather than leave it to the reaper, which would only run it into the same bug again.
            logger.exception("job %s failed unexpectedly", job.pk)
            job_fail(
                organization=organization,
                job=job,
                error_class=type(error).__name__,
                message="the job failed on an internal error; it has been logged for the operators",
            )


def _with_knowledge(
    organization: Organization, job: Job, agent: Agent, request_id: str
) -> tuple[dict[str, Any], Decimal]:
    """The job's request with the agent's documents' nearest chunks to its question as context, and
    what embedding the question cost (its own ledger row)."""
    messages = list(job.request["messages"])
    question = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), None)
    if not isinstance(question, str) or not question.strip():
        return job.request, Decimal(0)
    found = chunks_search(
        organization=organization,
        principal=job_principal(job),
        query=question,
        top_k=agent.retrieval_top_k,
        document_ids=list(agent.knowledge_document_ids),
        request_id=f"{request_id}.rag",
    )
    if not found.chunks:
        return job.request, found.cost_usd
    context = "\n\n".join(f"[{chunk['document_title']} #{chunk['ordinal']}] {chunk['text']}" for chunk in found.chunks)
    knowledge = {
        "role": "system",
        "content": f"Answer from these excerpts of the organization's documents:\n\n{context}",
    }
    return {**job.request, "messages": [knowledge, *messages]}, found.cost_usd


# Refusals that may pass: every provider busy or down, the rate limiter unreachable, a rate limit.
TRANSIENT_STATUSES = frozenset({429, 502, 503})


@transaction.atomic
def job_retry_later(*, organization: Organization, job: Job, error_class: str) -> None:
    """Put the job back in the queue, admitted, to run again after a backoff (seconds, far below the
    broker's visibility timeout; the reaper resends it if the message is lost)."""
    if Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, runs=job.runs).update(
        status=JobStatus.QUEUED, error_class=error_class[:100], admitted_at=timezone.now()
    ):
        delay = min(60.0, 2.0**job.runs) * random.uniform(0.5, 1.0)
        transaction.on_commit(lambda: _dispatch(organization, [job.pk], countdown=delay))


@transaction.atomic
def job_fail(*, organization: Organization, job: Job, error_class: str, message: str) -> None:
    """End the run a worker owns as failed (nothing happens if the job ended or changed hands)."""
    _finish(organization, job, JobStatus.FAILED, error=(error_class, message), run=job.runs)


def jobs_reap(*, organization: Organization, now: dt.datetime | None = None) -> dict[str, int]:
    """Recover jobs whose worker died (heartbeat stopped) and admitted jobs no worker picked up."""
    now = now or timezone.now()
    dead_before = now - dt.timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_SECONDS)
    lost_before = now - dt.timedelta(seconds=settings.JOB_DISPATCH_RESEND_SECONDS)
    requeued: list[UUID] = []
    failed = 0
    with transaction.atomic():
        dead = Job.objects.select_for_update(skip_locked=True).filter(
            status=JobStatus.RUNNING, heartbeat_at__lt=dead_before
        )
        for job in dead:
            if job.runs >= settings.JOB_MAX_RUNS:
                attempts_abandon(organization=organization, request_ids=[_request_id(job, job.runs)])
                _finish(organization, job, JobStatus.FAILED, error=("WorkerLost", f"its worker died {job.runs} times"))
                failed += 1
            else:
                requeued.append(job.pk)
        if requeued:
            Job.objects.filter(pk__in=requeued).update(status=JobStatus.QUEUED, admitted_at=now)
        lost = list(
            Job.objects.filter(status=JobStatus.QUEUED, admitted_at__lt=lost_before).values_list("id", flat=True)
        )
        if lost:
            Job.objects.filter(pk__in=lost).update(admitted_at=now)
        resend = requeued + lost
        if resend:
            transaction.on_commit(lambda: _dispatch(organization, resend))
    admitted = jobs_admit(organization=organization)
    if requeued or failed or lost:
        logger.warning(
            "jobs reaped",
            extra={"requeued": len(requeued), "failed": failed, "resent": len(lost), "admitted": len(admitted)},
        )
    return {"requeued": len(requeued), "failed": failed, "resent": len(lost)}


def _emit(organization: Organization, job: Job) -> None:
    """The job's webhook event, sent after commit by the webhooks app."""
    from apps.webhooks.services import webhook_event_emit

    webhook_event_emit(
        organization=organization,
        event_type=f"job.{job.status}",
        payload={"job": {"id": str(job.id), "status": job.status, "cost_usd": str(job.cost_usd), "result": job.result}},
        endpoint_id=job.webhook_endpoint_id,
    )
