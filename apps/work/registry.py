"""The kinds of durable work. Each app registers its kind in its AppConfig.ready:

    work_kind_register(WorkKind(name="job", model=Job, execute=..., ...))

and the runtime (apps.work.services, apps.work.tasks) runs, reaps, retries and sweeps it without
importing the app: the app's services never import a tasks module, so there is no cycle to break."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from apps.tenants.models import Organization
    from apps.work.models import WorkItem


@dataclass(frozen=True)
class RetrySchedule:
    """A kind's own, customer-facing retry schedule (webhook deliveries): how many attempts in all,
    the delay before each retry (the last repeats) with a +-`jitter` share, read when used so that
    settings can change them. Its retries wait in the database (`next_attempt_at`) and the beat's
    `dispatch` duty sends them when due: hours-long delays can't ride on broker countdowns, which
    must not outlive the visibility timeout."""

    max_attempts: Callable[[], int]
    delays_s: Callable[[], list[float]]
    jitter: float = 0.25


@dataclass(frozen=True)
class WorkKind:
    # Short, stable: it travels in task messages ("job").
    name: str
    model: type[WorkItem]
    # Runs one claimed row on this worker (the row is running, `attempts` is this run's number).
    # It records success itself, with `work_finish(..., attempt=item.attempts)`, in the transaction
    # that settles what the work cost; the runtime handles every exception it raises.
    execute: Callable[[Organization, Any], None]
    # After the row ended (in the transaction that ended it): events, notifications.
    on_finished: Callable[[Organization, Any], None] | None = None
    # Settles what runs that died left open (reserved provider calls), given their attempt numbers.
    abandon: Callable[[Organization, Any, list[int]], None] | None = None
    # The JSON fields whose content the organization's retention removes, and how: (field, strip).
    content_fields: tuple[tuple[str, Callable[[Any], Any]], ...] = ()
    # The time the retention counts from: the end ("finished_at": only finished rows are swept, a
    # waiting job keeps the request it needs) or the creation ("created_at": a webhook delivery
    # still waiting, e.g. in a suspended organization, loses its content too and is sent without).
    retention_from: str = "finished_at"
    # The object whose progress stream (apps.work.progress) a change of a row wakes, as
    # (topic, id); None: the row itself, (name, pk). A workflow step names its run.
    progress_of: Callable[[Any], tuple[str, Any]] | None = None
    # How many admitted and unfinished rows one organization may have (None: no admission step).
    cap: Callable[[Organization], int] | None = None
    # Locks, in the caller's transaction, what every writer locks before rows of this kind (a
    # workflow step: its run), given their primary keys: the runtime calls it before it locks or
    # ends rows, so there is one lock order everywhere.
    lock_first: Callable[[list[Any]], None] | None = None
    # Its own attempt limit and backoff (None: the policy's, JOB_MAX_RUNS and a jittered 2**n s).
    schedule: RetrySchedule | None = None


_kinds: dict[str, WorkKind] = {}


def work_kind_register(kind: WorkKind) -> None:
    existing = _kinds.get(kind.name)
    if existing is not None and existing.model is not kind.model:
        raise ValueError(f"another kind of work is registered as {kind.name!r}")
    _kinds[kind.name] = kind


def work_kind(name: str) -> WorkKind:
    try:
        return _kinds[name]
    except KeyError:
        raise LookupError(f"no kind of work {name!r} is registered") from None


def work_kinds() -> list[WorkKind]:
    return list(_kinds.values())


# Upkeep of work that is not (yet) a registered kind, run by the same per-tenant fan-out
# (apps.work.tasks.work_maintain): duty -> name -> function(*, organization) run in its schema.
DUTY_NAMES = ("reap", "sweep", "dispatch")
_upkeeps: dict[str, dict[str, Callable[..., Any]]] = {duty: {} for duty in DUTY_NAMES}


def work_upkeep_register(*, duty: str, name: str, run: Callable[..., Any]) -> None:
    """`run(organization=...)` joins the beat's `duty` for every organization that gets it."""
    if duty not in _upkeeps:
        raise ValueError(f"no duty {duty!r}; duties are {', '.join(DUTY_NAMES)}")
    _upkeeps[duty][name] = run


def work_upkeeps(duty: str) -> dict[str, Callable[..., Any]]:
    return dict(_upkeeps[duty])
