"""The one retry-later policy of durable work: which failures pass (a provider's transient refusal,
a Redis or broker outage), how long to wait before the next attempt, and when to give up."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import kombu.exceptions
import redis
from django.conf import settings

from apps.llm.calls import LlmRefusal

if TYPE_CHECKING:
    from apps.work.registry import WorkKind

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 60.0


@dataclass(frozen=True)
class Failure:
    """How a run ended in an exception: the error class and message to record, and whether the
    same work may succeed later unchanged."""

    error_class: str
    message: str
    transient: bool
    # Fields of the row recorded with the outcome (a webhook delivery's response status and excerpt).
    values: dict[str, Any] = field(default_factory=dict)
    # The least wait before the next attempt that the other side asked for (Retry-After).
    retry_after_s: float | None = None


class TransientFailure(Exception):
    """Raised by a kind's `execute` for a failure outside us that may pass unchanged (a webhook
    receiver's 5xx, a timeout): the row is retried later, per the kind's schedule, until its
    attempts are spent. `values` are recorded on the row with the outcome."""

    def __init__(
        self,
        error_class: str,
        message: str,
        *,
        values: dict[str, Any] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.error_class, self.message = error_class, message
        self.values, self.retry_after_s = values or {}, retry_after_s


def failure_classify(error: BaseException) -> Failure | None:
    """A refusal of the engine (transient when it says it is `retryable`: a rate limit, every
    provider busy or down, the rate limiter unreachable), or an outage of Redis or the broker.
    None for anything else: the caller decides (a database outage is left to the reaper; a bug
    fails the work at once)."""
    if isinstance(error, TransientFailure):
        return Failure(
            error_class=error.error_class,
            message=error.message,
            transient=True,
            values=error.values,
            retry_after_s=error.retry_after_s,
        )
    if isinstance(error, LlmRefusal):
        return Failure(error_class=error.code, message=error.message, transient=error.retryable)
    if isinstance(error, redis.RedisError | kombu.exceptions.OperationalError | OSError):
        return Failure(error_class=type(error).__name__, message=str(error), transient=True)
    return None


def max_attempts(kind: WorkKind | None = None) -> int:
    """Runs a worker may start for one row: transient failures and dead workers both count. A kind
    with its own schedule has its own limit."""
    if kind is not None and kind.schedule is not None:
        return int(kind.schedule.max_attempts())
    return int(settings.JOB_MAX_RUNS)


# A Retry-After is honoured up to this.
RETRY_AFTER_MAX_SECONDS = 24 * 3600.0


def backoff_seconds(attempt: int, kind: WorkKind | None = None, at_least: float | None = None) -> float:
    """Before the next attempt after attempt `attempt` failed transiently. The policy's own:
    exponential, capped far below the broker's visibility timeout, with full jitter so a burst of
    refusals spreads out. A kind with a schedule: its delay for that retry (the last repeats) with
    its jitter. A longer wait the other side asked for (`at_least`, Retry-After) wins, up to a day."""
    schedule = kind.schedule if kind is not None else None
    if schedule is None:
        delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS**attempt) * random.uniform(0.5, 1.0)
    else:
        delays = schedule.delays_s() or [0.0]
        delay = delays[min(max(attempt, 1), len(delays)) - 1] * random.uniform(1 - schedule.jitter, 1 + schedule.jitter)
    if at_least is not None:
        delay = max(delay, min(at_least, RETRY_AFTER_MAX_SECONDS))
    return delay
