"""Whether a call may start at all: the organization accepts requests and its rate limits allow it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from apps.llm.breaker import OPENED_AT
from apps.llm.budgets import Spender
from apps.llm.ratelimits import RateLimited, RateLimitUnavailable, rate_limit_take
from apps.llm.refusals import LlmRefusal
from apps.llm.validation import ChatCall
from apps.tenants.models import Organization


def call_admit(*, organization: Organization, spender: Spender, tokens: int, breakers: Sequence[str] = ()) -> list[Any]:
    """Take `tokens` from the organization's (and the key's) per-minute limits, or refuse the call.
    `breakers`: breaker keys whose state is read in the same round trip (returned, in order)."""
    if not organization.accepts_requests:
        raise LlmRefusal(403, "organization_suspended", f"the organization is {organization.status}")
    try:
        return rate_limit_take(
            organization=organization,
            api_key_id=spender.api_key_id,
            tokens=tokens,
            reads=[(key, OPENED_AT) for key in breakers],
        )
    except RateLimited as exc:
        raise LlmRefusal(429, "rate_limit_exceeded", str(exc), retryable=True, retry_after_s=exc.retry_after_s) from exc
    except RateLimitUnavailable as exc:
        raise LlmRefusal(
            503, "rate_limiter_unavailable", "the rate limiter cannot be reached; try again", retryable=True
        ) from exc


def chat_rate_tokens(call: ChatCall) -> int:
    """What a chat call counts against tokens-per-minute limits: its prompt estimate and output allowance."""
    return call.prompt_token_bound // 4 + call.images * 1_000 + (call.max_tokens or 0)
