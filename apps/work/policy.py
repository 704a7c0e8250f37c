"""The one retry-later policy of durable work: which failures pass (a provider's transient refusal,
a Redis or broker outage), how long to wait before the next attempt, and when to give up."""

from __future__ import annotations

import random
from dataclasses import dataclass

import kombu.exceptions
import redis
from django.conf import settings

from apps.llm.calls import LlmRefusal

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 60.0


@dataclass(frozen=True)
class Failure:
    """How a run ended in an exception: the error class and message to record, and whether the
    same work may succeed later unchanged."""

    error_class: str
    message: str
    transient: bool


def failure_classify(error: BaseException) -> Failure | None:
    """A refusal of the engine (transient when it says it is `retryable`: a rate limit, every
    provider busy or down, the rate limiter unreachable), or an outage of Redis or the broker.
    None for anything else: the caller decides (a database outage is left to the reaper; a bug
    fails the work at once)."""
    if isinstance(error, LlmRefusal):
        return Failure(error_class=error.code, message=error.message, transient=error.retryable)
    if isinstance(error, redis.RedisError | kombu.exceptions.OperationalError | OSError):
        return Failure(error_class=type(error).__name__, message=str(error), transient=True)
    return None


def max_attempts() -> int:
    """Runs a worker may start for one row: transient failures and dead workers both count."""
    return int(settings.JOB_MAX_RUNS)


def backoff_seconds(attempt: int) -> float:
    """Before the next attempt after attempt `attempt` failed transiently: exponential, capped far
    below the broker's visibility timeout, with full jitter so a burst of refusals spreads out."""
    return min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS**attempt) * random.uniform(0.5, 1.0)
