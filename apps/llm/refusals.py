"""The engine's refusal: why a call was not (or could not be) answered, in domain terms.

Every part of the engine raises `LlmRefusal`; callers in other apps catch it (a job retries later
when it is `retryable`, a workflow step fails with its `code`). The gateway turns it into OpenAI's
or Anthropic's error body (`apps.llm.errors.GatewayError`); the REST API renders it like any other
service refusal (`cognitionos.refusals.Refusal`, apps.api.errors).
"""

from __future__ import annotations

from cognitionos.refusals import Refusal


class LlmRefusal(Refusal):
    """A refused call.

    - `http_status`: the status an HTTP edge should answer with (400 bad request, 402 budget,
      404 unknown model, 429 rate limited, 502/503 provider or dependency unavailable...).
    - `code`: a stable machine-readable reason (`budget_exceeded`, `model_not_found`...).
    - `retryable`: the same call may succeed later unchanged (rate limits, provider outages);
      a request's own fault or an exhausted budget is not.
    - `param`: the request field at fault, if one is.
    - `retry_after_s`: when known, how long to wait before retrying.
    """

    def __init__(
        self,
        http_status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        retryable: bool = False,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status, self.code, self.message = http_status, code, message
        self.param, self.retryable, self.retry_after_s = param, retryable, retry_after_s

    def __repr__(self) -> str:
        return f"LlmRefusal({self.http_status}, {self.code!r}, {self.message!r})"


def invalid(message: str, param: str | None = None, code: str = "invalid_request") -> LlmRefusal:
    """The request itself is wrong (400): retrying it unchanged cannot help."""
    return LlmRefusal(400, code, message, param=param)


def unsupported(param: str, why: str = "") -> LlmRefusal:
    """A field we don't forward: what reaches a provider is only what we price (docs/security.md)."""
    reason = why or "CognitionOS forwards only the parameters it can price"
    return LlmRefusal(400, "unsupported_parameter", f"`{param}` is not supported: {reason}", param=param)
