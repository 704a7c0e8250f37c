"""The attempt loop: one for chat calls, streams and embeddings.

Each try of a model is a reserved attempt in the ledger, settled whatever happens. Models are tried
in the planned order, each up to LLM_MAX_ATTEMPTS times with jittered backoff while the failure is
retryable, skipping a deployment whose breaker is open. A provider the organization has its own key
for is called with that key, paid by the organization, and feeds breakers and health figures of the
organization's own (its bad key or exhausted quota must not take the model away from anyone else).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.db import connection

from apps.billing.selectors import entitlement
from apps.llm.breaker import breaker_allow, breaker_key, breaker_record
from apps.llm.budgets import BudgetExceeded, Settlement, Spender, attempt_reserve, attempt_settle
from apps.llm.models import AttemptStatus, UsageAttempt
from apps.llm.platform.selectors import PricedModel
from apps.llm.providers import (
    CallContext,
    ChatProvider,
    ProviderError,
    ProviderNotConfigured,
    own_key_name,
    provider_for,
)
from apps.llm.refusals import LlmRefusal
from apps.llm.router import deployment_record
from apps.llm.services import provider_own_keys
from apps.tenants.models import Organization

logger = logging.getLogger(__name__)

T = TypeVar("T")


def budget_refusal(exc: BudgetExceeded) -> LlmRefusal:
    if exc.scope == "plan":
        # The platform's budget of a plan without overage (Free): the plan's included usage is spent.
        return LlmRefusal(
            402,
            "plan_usage_exhausted",
            f"your plan's included usage this month (${exc.limit_usd or 0:.2f}) is spent: upgrade the plan to continue",
        )
    return LlmRefusal(402, "budget_exceeded", str(exc))


def _release_connection() -> None:
    # The provider call can take minutes: give the pooled connection back instead of holding it idle.
    if not connection.in_atomic_block:
        connection.close()


def _backoff(attempt: int, retry_after: float | None) -> float:
    ceiling = float(settings.LLM_RETRY_MAX_S)
    if retry_after is not None:
        return min(retry_after, ceiling)
    delay: float = min(ceiling, float(settings.LLM_RETRY_BASE_S) * 2 ** (attempt - 1))
    return delay * random.uniform(0.5, 1.0)


def _guarded_call(call: Callable[..., T], *args: Any) -> T:
    """A provider call whose every failure is a ProviderError, so its attempt is always settled."""
    try:
        return call(*args)
    except ProviderError:
        raise
    except Exception as exc:
        logger.exception("provider adapter failed")
        raise ProviderError(str(exc), retryable=False, error_class=type(exc).__name__) from exc


@dataclass(frozen=True)
class Answered(Generic[T]):
    """The attempt that got an answer: its model, its (still open) ledger row, what the provider
    returned, and when the call started (perf_counter), for its latency."""

    entry: PricedModel
    attempt: UsageAttempt
    result: T
    started: float

    def latency_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)


# What one try does with the provider: (provider, the payload for this model, the call's context).
Send = Callable[[ChatProvider, dict[str, Any], CallContext], T]


class Attempts:
    """One call's attempts. `payload` gives the request for a model, `reservation` what to hold for
    it (its worst case); `max_cost_usd` is the call's own ceiling, if it set one."""

    def __init__(
        self,
        *,
        organization: Organization,
        spender: Spender,
        request_id: str,
        payload: Callable[[PricedModel], dict[str, Any]],
        reservation: Callable[[PricedModel], Decimal],
        max_cost_usd: Decimal | None = None,
        model_requested: str = "",
    ) -> None:
        self.organization, self.spender, self.request_id = organization, spender, request_id
        self.model_requested = model_requested  # the model or policy the caller named, for the ledger
        self.payload, self.reservation, self.max_cost_usd = payload, reservation, max_cost_usd
        # Own keys are a plan feature (byok): after a downgrade they stay stored but unused (the platform pays).
        self.own_keys = (
            provider_own_keys(organization=organization) if entitlement(organization, "byok").allowed else {}
        )
        self.health_scope = f"org{organization.pk}"
        self.number = 0
        self.last_error: ProviderError | None = None
        # Breaker states read in the admission's round trip, each used once (for the first look).
        self.breaker_reads: dict[str, tuple[bytes | str | None]] = {}
        # Breakers seen closed in that read: a success there is observed in the background batch; one
        # through a breaker not seen closed (a half-open probe) closes it at once.
        self.seen_closed: set[str] = set()

    def scope(self, entry: PricedModel) -> str:
        """Whose breaker and health figures this deployment's calls feed: everyone's, or the organization's."""
        return self.health_scope if own_key_name(entry.model) in self.own_keys else ""

    def breaker_key(self, entry: PricedModel) -> str:
        return breaker_key(entry.model.provider, entry.model.name, self.scope(entry))

    def allowed(self, entry: PricedModel) -> bool:
        key = self.breaker_key(entry)
        read = self.breaker_reads.pop(key, None)
        if read is not None and read[0] is None:
            self.seen_closed.add(key)
        return breaker_allow(entry.model.provider, entry.model.name, scope=self.scope(entry), read=read)

    def provider(self, entry: PricedModel) -> ChatProvider:
        return provider_for(entry.model, self.own_keys.get(own_key_name(entry.model)))

    def context(self) -> CallContext:
        return CallContext(request_id=self.request_id, attempt=self.number, timeout_s=settings.LLM_PROVIDER_TIMEOUT_S)

    def begin(self, entry: PricedModel) -> UsageAttempt:
        """Reserve the next attempt (a refusal becomes the 402), then give the connection back for the call."""
        self.number += 1
        try:
            attempt = attempt_reserve(
                spender=self.spender,
                request_id=self.request_id,
                attempt=self.number,
                model_name=entry.model.name,
                provider=entry.model.provider,
                amount_usd=self.reservation(entry),
                max_cost_usd=self.max_cost_usd,
                paid_by="organization" if own_key_name(entry.model) in self.own_keys else "platform",
                model_requested=self.model_requested,
            )
        except BudgetExceeded as exc:
            raise budget_refusal(exc) from exc
        _release_connection()
        return attempt

    def succeeded(self, entry: PricedModel, latency_ms: int, cost_usd: Decimal | None = None) -> None:
        """Clear the deployment's breaker (its failure count, or the open state a probe ends) and
        record its latency (and cost, in the traffic counters of anomaly detection): one round trip,
        in the background batch when the breaker was seen closed, at once otherwise."""
        key = self.breaker_key(entry)
        deployment_record(
            entry.model.name,
            provider=entry.model.provider,
            success=True,
            latency_ms=latency_ms,
            scope=self.scope(entry),
            breaker_key=key,
            organization_id=self.organization.pk,
            cost_usd=cost_usd,
            at_once=key not in self.seen_closed,
        )

    def provider_failed(self, entry: PricedModel, error: ProviderError) -> None:
        """Count a failure against the deployment, unless it was the request's own fault."""
        if error.provider_side:
            scope = self.scope(entry)
            breaker_record(entry.model.provider, entry.model.name, success=False, scope=scope)
            self.seen_closed.discard(self.breaker_key(entry))  # its state is no longer what was read
            deployment_record(entry.model.name, provider=entry.model.provider, success=False, scope=scope)

    def failed(
        self, entry: PricedModel, attempt: UsageAttempt, error: ProviderError, *, started: float, retry: int
    ) -> bool:
        """Settle a failed attempt; True (after the backoff) if the same model should be tried again."""
        self.last_error = error
        latency_ms = int((time.perf_counter() - started) * 1000)
        attempt_settle(
            organization=self.organization,
            attempt=attempt,
            settlement=Settlement(status=AttemptStatus.FAILED, latency_ms=latency_ms, error_class=error.error_class),
        )
        self.provider_failed(entry, error)
        if not error.retryable or retry >= settings.LLM_MAX_ATTEMPTS:
            return False
        time.sleep(_backoff(retry, error.retry_after))
        return True

    def exhausted(self) -> LlmRefusal:
        error = self.last_error
        detail = f": {error.error_class}" if error else ""
        if error is not None and error.status == 429:
            return LlmRefusal(
                429,
                "provider_rate_limited",
                f"every provider refused the request{detail}",
                retryable=True,
                retry_after_s=int(error.retry_after or 1),
            )
        if isinstance(error, ProviderNotConfigured):
            return LlmRefusal(503, "provider_not_configured", f"{error}; ask for a model whose provider is set up")
        if error is not None and error.request_fault:
            return LlmRefusal(400, "provider_rejected_request", f"the provider refused the request{detail}")
        return LlmRefusal(502, "provider_unavailable", f"no provider could answer{detail}", retryable=True)

    def run(self, plan: list[PricedModel], send: Send[T]) -> Answered[T]:
        """Try the plan's models in order until one answers; its attempt is left open for the caller
        to settle (with the answer's usage). Raises LlmRefusal when none could."""
        for entry in plan:
            if not self.allowed(entry):
                continue
            try:
                provider = self.provider(entry)
            except ProviderNotConfigured as error:  # no credentials for it here: the next model, if any
                self.last_error = error
                continue
            for retry in range(1, settings.LLM_MAX_ATTEMPTS + 1):
                attempt = self.begin(entry)
                started = time.perf_counter()
                try:
                    result = _guarded_call(send, provider, self.payload(entry), self.context())
                except ProviderError as error:
                    if self.failed(entry, attempt, error, started=started, retry=retry):
                        continue
                    break
                return Answered(entry=entry, attempt=attempt, result=result, started=started)
        raise self.exhausted()
