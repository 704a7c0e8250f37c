"""The lifecycle of durable work, once for every kind (apps.work.registry):

    queued ──admit──▶ queued+admitted ──claim──▶ running ──▶ succeeded | failed | cancelled
                          ▲                         │
                          └── retry later / reap ───┘

- admit: at most the kind's cap of admitted and unfinished rows per organization; the oldest go first.
- claim: one conditional UPDATE takes a queued row, or a running one whose heartbeat stopped, and
  numbers the run (`attempts`). Only the run whose number is current may record the end.
- heartbeat: one thread per process touches every running row of the process.
- retry later: a transient failure (apps.work.policy) puts the row back in the queue with a jittered
  backoff until the attempts are spent; then it fails with the failure's class.
- reap: rows whose heartbeat stopped go back to the queue (or fail, out of attempts), admitted rows
  no worker took are sent again.
- content: the kind's content fields are emptied at the end (no-content mode) or after retention.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from decimal import Decimal
from typing import Any

import psycopg
from celery import current_app
from django.conf import settings
from django.db import OperationalError as DjangoOperationalError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.llm.calls import llm_content_policy
from apps.tenants.models import Organization
from apps.work.admission import waiting_admit, waiting_exists
from apps.work.heartbeat import heartbeats
from apps.work.metrics import WORK_RETRIES, work_finished_record
from apps.work.models import UNFINISHED, WorkItem, WorkStatus
from apps.work.policy import backoff_seconds, failure_classify, max_attempts
from apps.work.progress import progress_item_publish
from apps.work.registry import WorkKind, work_kind
from cognitionos.logcontext import log_context

logger = logging.getLogger(__name__)

# The task that runs one row (apps.work.tasks.work_run), sent by name: the runtime never imports
# its tasks module, which imports the runtime.
WORK_RUN_TASK = "apps.work.tasks.work_run"
INTERNAL_ERROR = "the work failed on an internal error; it has been logged for the operators"


def _kind(kind: WorkKind | str) -> WorkKind:
    return kind if isinstance(kind, WorkKind) else work_kind(kind)


def _lock_first(kind: WorkKind, ids: list[Any]) -> None:
    if kind.lock_first is not None and ids:
        kind.lock_first(ids)


def work_send(
    *, organization: Organization, kind: WorkKind | str, ids: list[Any], countdown: float | None = None
) -> None:
    """Send one run message per row (call after the commit that made them runnable)."""
    name = _kind(kind).name
    for item_id in ids:
        current_app.send_task(
            WORK_RUN_TASK,
            kwargs={"tenant_id": organization.pk, "kind": name, "item_id": str(item_id)},
            countdown=countdown,
        )


def work_admit(*, organization: Organization, kind: WorkKind | str, waiting: bool = False) -> list[Any]:
    """Send the oldest waiting rows to the queue while fewer than the kind's cap are admitted and
    unfinished, so one organization that floods the queue can't starve the others. `waiting`: the
    caller knows a row waits (it just created one), so the cheap check is skipped."""
    kind = _kind(kind)
    if kind.cap is None:
        return []
    table = kind.model._meta.db_table
    if not waiting and not waiting_exists(table=table):
        return []
    ids = waiting_admit(table=table, cap=kind.cap(organization))
    if ids:
        transaction.on_commit(lambda: work_send(organization=organization, kind=kind, ids=ids))
    return ids


# A row another transaction holds (the reaper taking it back, a worker finishing it) is skipped, not
# waited for: its holder sends it again if it goes back to the queue. A kind with its own retry
# schedule (due_by set) does not run a retry before its time (next_attempt_at), a second of slack
# covering the clocks of two hosts; other kinds' retries come as countdowns and run when they arrive.
_CLAIM = """
    UPDATE {table}
       SET status = 'running', heartbeat_at = %(now)s, attempts = attempts + 1, next_attempt_at = NULL,
           started_at = COALESCE(started_at, %(now)s), admitted_at = COALESCE(admitted_at, %(now)s)
     WHERE {pk} = (
        SELECT {pk} FROM {table}
         WHERE {pk} = %(id)s AND attempts < %(max_attempts)s
           AND (%(due_by)s::timestamptz IS NULL OR next_attempt_at IS NULL OR next_attempt_at <= %(due_by)s)
           AND (status = 'queued' OR (status = 'running' AND heartbeat_at < %(alive_after)s))
           FOR UPDATE SKIP LOCKED
     )
 RETURNING *
"""


def work_claim(*, organization: Organization, kind: WorkKind | str, item_id: Any) -> Any | None:
    """Take the row for this run of a worker, or None if it ended or a live worker has it (a
    redelivered message). Runs that died before are settled first (the kind's `abandon`); a row
    whose workers died as often as it may run fails instead."""
    kind = _kind(kind)
    model = kind.model
    now = timezone.now()
    alive_after = now - dt.timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_SECONDS)
    sql = _CLAIM.format(table=model._meta.db_table, pk=model._meta.pk.column)
    params = {
        "id": item_id,
        "now": now,
        "alive_after": alive_after,
        "due_by": now + dt.timedelta(seconds=1) if kind.schedule is not None else None,
        "max_attempts": max_attempts(kind),
    }
    item = next(iter(model._default_manager.raw(sql, params)), None)
    if item is not None:
        if item.attempts > 1 and kind.abandon is not None:
            kind.abandon(organization, item, list(range(1, item.attempts)))
        progress_item_publish(organization=organization, kind=kind, item=item)
        return item
    with transaction.atomic():
        _lock_first(kind, [item_id])
        dead = (
            model._default_manager.select_for_update(skip_locked=True)
            .filter(pk=item_id, attempts__gte=max_attempts(kind), status__in=UNFINISHED)
            .exclude(status=WorkStatus.RUNNING, heartbeat_at__gte=alive_after)
            .first()
        )
        if dead is not None:
            _worker_lost(organization, kind, dead)
    return None


def _worker_lost(organization: Organization, kind: WorkKind, item: WorkItem) -> None:
    if kind.abandon is not None:
        kind.abandon(organization, item, list(range(1, item.attempts + 1)))
    work_finish(
        organization=organization,
        kind=kind,
        item=item,
        status=WorkStatus.FAILED,
        error=("WorkerLost", f"its worker died {item.attempts} times"),
    )


def work_content_strip(*, kind: WorkKind | str, item: Any, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The kind's content fields emptied (from `values` where given, else from the row)."""
    values = values or {}
    return {
        name: strip(values[name] if name in values else getattr(item, name))
        for name, strip in _kind(kind).content_fields
    }


def work_finish(
    *,
    organization: Organization,
    kind: WorkKind | str,
    item: Any,
    status: WorkStatus,
    values: dict[str, Any] | None = None,
    error: tuple[str, str] | None = None,
    attempt: int | None = None,
) -> bool:
    """End a row that has not ended (with `attempt`: that this run still owns) with `status` and
    `values`; admit the next waiting row and tell the kind. False, and nothing written, if it had
    ended or changed hands."""
    kind = _kind(kind)
    now = timezone.now()
    values = {**(values or {}), "status": status, "finished_at": now, "next_attempt_at": None}
    if error is not None:
        values.update(error_class=error[0][:100], error_message=error[1])
    # A kind without content fields (a workflow step: its content is its run's) has none to empty.
    if (
        kind.content_fields
        and item.content_deleted_at is None
        and not llm_content_policy(organization=organization).store_content
    ):
        values.update(work_content_strip(kind=kind, item=item, values=values), content_deleted_at=now)
    unfinished = kind.model._default_manager.filter(pk=item.pk, status__in=UNFINISHED)
    if attempt is not None:
        unfinished = unfinished.filter(status=WorkStatus.RUNNING, attempts=attempt)
    # Usually inside the caller's transaction (the one settling the call's ledger row): no savepoint.
    with transaction.atomic(savepoint=False):
        _lock_first(kind, [item.pk])
        if not unfinished.update(**values):
            return False
        for name, value in values.items():
            setattr(item, name, value)
        progress_item_publish(organization=organization, kind=kind, item=item)
        work_admit(organization=organization, kind=kind)
        if kind.on_finished is not None:
            kind.on_finished(organization, item)
        # Every kind's outcome, duration and cost, counted once the end is committed.
        transaction.on_commit(
            functools.partial(
                work_finished_record,
                kind=kind.name,
                outcome=str(status),
                created_at=_when(item.created_at),
                started_at=_when(item.started_at),
                finished_at=now,
                cost_usd=item.cost_usd if isinstance(item.cost_usd, Decimal) else None,
            )
        )
    return True


def _when(value: object) -> dt.datetime | None:
    """A row's time as loaded (not a database default or expression still unresolved)."""
    return value if isinstance(value, dt.datetime) else None


def work_fail(
    *,
    organization: Organization,
    kind: WorkKind | str,
    item: Any,
    error_class: str,
    message: str,
    values: dict[str, Any] | None = None,
) -> bool:
    """End the run a worker owns as failed (nothing happens if the row ended or changed hands)."""
    return work_finish(
        organization=organization,
        kind=kind,
        item=item,
        status=WorkStatus.FAILED,
        values=values,
        error=(error_class, message),
        attempt=item.attempts,
    )


def work_requeue(*, kind: WorkKind | str, item: Any, values: dict[str, Any] | None = None) -> None:
    """Queue a finished row again as if new (a person resumes it): attempts, times and error
    cleared; what it did before is the kind's to keep or not. The caller admits it (work_admit)."""
    fresh = {
        "status": WorkStatus.QUEUED,
        "attempts": 0,
        "admitted_at": None,
        "started_at": None,
        "heartbeat_at": None,
        "finished_at": None,
        "next_attempt_at": None,
        "error_class": "",
        "error_message": "",
        **(values or {}),
    }
    _kind(kind).model._default_manager.filter(pk=item.pk).update(**fresh)
    item.refresh_from_db()


def work_retry_later(
    *,
    organization: Organization,
    kind: WorkKind | str,
    item: Any,
    error_class: str,
    message: str = "",
    values: dict[str, Any] | None = None,
    at_least: float | None = None,
) -> bool:
    """Put the row this run owns back in the queue, admitted, to run again after the policy's
    backoff (seconds, far below the broker's visibility timeout; the reaper sends it again if the
    message is lost). A kind with its own schedule waits in the database instead, for the beat's
    dispatch duty (`work_dispatch`) to send it when due."""
    kind = _kind(kind)
    delay = backoff_seconds(item.attempts, kind, at_least)
    now = timezone.now()
    with transaction.atomic(savepoint=False):
        _lock_first(kind, [item.pk])
        requeued = kind.model._default_manager.filter(
            pk=item.pk, status=WorkStatus.RUNNING, attempts=item.attempts
        ).update(
            **(values or {}),
            status=WorkStatus.QUEUED,
            error_class=error_class[:100],
            error_message=message,
            admitted_at=now,
            next_attempt_at=now + dt.timedelta(seconds=delay),
        )
        if requeued:
            progress_item_publish(organization=organization, kind=kind, item=item)
            transaction.on_commit(WORK_RETRIES.labels(kind.name).inc)
        if requeued and kind.schedule is None:
            transaction.on_commit(
                lambda: work_send(organization=organization, kind=kind, ids=[item.pk], countdown=delay)
            )
    return bool(requeued)


def work_execute(*, organization: Organization, kind: WorkKind | str, item_id: Any) -> Any | None:
    """Run one row on this worker (the body of the run task). Safe to deliver twice: a finished
    row, or one a live worker holds, is left alone. Returns the row it ran (None: not claimed)."""
    kind = _kind(kind)
    # Every log line of the run (and the task's span, when tracing) names the row.
    with log_context(work_kind=kind.name, work_id=item_id):
        return _work_execute(organization=organization, kind=kind, item_id=item_id)


def _work_execute(*, organization: Organization, kind: WorkKind, item_id: Any) -> Any | None:
    item = work_claim(organization=organization, kind=kind, item_id=item_id)
    if item is None:
        return None
    with heartbeats.running(organization.schema_name, (kind.name, item.pk)):
        try:
            kind.execute(organization, item)
        except (DjangoOperationalError, psycopg.OperationalError):
            # The database is unreachable or its pool exhausted: nothing can be recorded now. The
            # heartbeat stops with this run, and the reaper takes the row back once it can.
            logger.warning("%s %s stopped: the database could not be reached", kind.name, item.pk, exc_info=True)
            raise
        except Exception as error:
            failure = failure_classify(error)
            if failure is None:
                # A bug of ours: fail now rather than leave it to the reaper, which would only run
                # it into the same bug again. Internals stay in the log.
                logger.exception("%s %s failed unexpectedly", kind.name, item.pk)
                work_fail(
                    organization=organization,
                    kind=kind,
                    item=item,
                    error_class=type(error).__name__,
                    message=INTERNAL_ERROR,
                )
            elif failure.transient and item.attempts < max_attempts(kind):
                logger.warning("%s %s: %s, retried later", kind.name, item.pk, failure.error_class)
                work_retry_later(
                    organization=organization,
                    kind=kind,
                    item=item,
                    error_class=failure.error_class,
                    message=failure.message,
                    values=failure.values,
                    at_least=failure.retry_after_s,
                )
            else:
                work_fail(
                    organization=organization,
                    kind=kind,
                    item=item,
                    error_class=failure.error_class,
                    message=failure.message,
                    values=failure.values,
                )
    return item


def work_reap(*, organization: Organization, kind: WorkKind | str, now: dt.datetime | None = None) -> dict[str, int]:
    """Take back rows whose worker died (heartbeat stopped): to the queue, or failed when out of
    attempts; send again admitted rows no worker took (the message died with a worker); admit."""
    kind = _kind(kind)
    manager = kind.model._default_manager
    now = now or timezone.now()
    dead_before = now - dt.timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_SECONDS)
    lost_before = now - dt.timedelta(seconds=settings.JOB_DISPATCH_RESEND_SECONDS)
    requeued: list[Any] = []
    failed = 0
    with transaction.atomic():
        dead = manager.filter(status=WorkStatus.RUNNING, heartbeat_at__lt=dead_before)
        if kind.lock_first is not None:
            _lock_first(kind, list(dead.values_list("pk", flat=True)))
        dead = dead.select_for_update(skip_locked=True)
        for item in dead:
            if item.attempts >= max_attempts(kind):
                _worker_lost(organization, kind, item)
                failed += 1
            else:
                requeued.append(item)
        if requeued:
            # The reason stays on the row until the next attempt ends it (people see why it is
            # waiting again, and a delivery's last error says the worker died).
            lost_worker = {
                "status": WorkStatus.QUEUED,
                "admitted_at": now,
                "error_class": "WorkerLost",
                "error_message": "its worker stopped (no heartbeat); queued again",
            }
            manager.filter(pk__in=[item.pk for item in requeued]).update(**lost_worker)
            for item in requeued:
                for name, value in lost_worker.items():
                    setattr(item, name, value)
                progress_item_publish(organization=organization, kind=kind, item=item)
        # A retry waiting for its time (next_attempt_at ahead) is not lost.
        lost = list(
            manager.filter(status=WorkStatus.QUEUED, admitted_at__lt=lost_before)
            .filter(Q(next_attempt_at=None) | Q(next_attempt_at__lt=lost_before))
            .values_list("pk", flat=True)
        )
        if lost:
            manager.filter(pk__in=lost).update(admitted_at=now, next_attempt_at=None)
        resend = [item.pk for item in requeued] + lost
        if resend:
            transaction.on_commit(lambda: work_send(organization=organization, kind=kind, ids=resend))
    admitted = work_admit(organization=organization, kind=kind)
    if requeued or failed or lost:
        logger.warning(
            "%s reaped",
            kind.name,
            extra={"requeued": len(requeued), "failed": failed, "resent": len(lost), "admitted": len(admitted)},
        )
    return {"requeued": len(requeued), "failed": failed, "resent": len(lost)}


def work_dispatch(
    *, organization: Organization, kind: WorkKind | str, now: dt.datetime | None = None, limit: int = 500
) -> int:
    """Send the retries of a kind with its own schedule that are due (beat, `dispatch` duty):
    they waited in the database, not in the broker. A sent row counts as admitted now, so the
    reaper sends it again if no worker takes it. Returns how many were sent."""
    kind = _kind(kind)
    if kind.schedule is None:
        return 0  # its retries travel as countdowns
    now = now or timezone.now()
    manager = kind.model._default_manager
    with transaction.atomic():
        due = list(
            manager.select_for_update(skip_locked=True)
            .filter(status=WorkStatus.QUEUED, next_attempt_at__lte=now)
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:limit]
        )
        if due:
            manager.filter(pk__in=due).update(admitted_at=now, next_attempt_at=None)
            transaction.on_commit(lambda: work_send(organization=organization, kind=kind, ids=due))
    return len(due)


def work_content_sweep(
    *, organization: Organization, kind: WorkKind | str, now: dt.datetime | None = None, batch: int = 500
) -> int:
    """Empty the content fields of finished rows older than the organization's content retention
    (of every finished row in no-content mode), in batches; counts, costs and timings stay."""
    kind = _kind(kind)
    if not kind.content_fields:
        return 0
    now = now or timezone.now()
    policy = llm_content_policy(organization=organization)
    cutoff = now if not policy.store_content else now - dt.timedelta(days=policy.retention_days)
    fields = [name for name, _ in kind.content_fields]
    swept = 0
    while True:
        with transaction.atomic():
            rows = list(
                kind.model._default_manager.select_for_update(skip_locked=True)
                .filter(content_deleted_at=None, **{f"{kind.retention_from}__lt": cutoff})
                .only("pk", *fields)[:batch]
            )
            if not rows:
                return swept
            for row in rows:
                for name, value in work_content_strip(kind=kind, item=row).items():
                    setattr(row, name, value)
                row.content_deleted_at = now
            kind.model._default_manager.bulk_update(rows, [*fields, "content_deleted_at"])
            swept += len(rows)
