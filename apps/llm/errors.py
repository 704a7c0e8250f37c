"""The gateway's translation of the engine's refusal into OpenAI's and Anthropic's error shapes.

The engine and every app that calls it speak `LlmRefusal` (apps.llm.refusals); only the gateway's
views know HTTP bodies, so only they build a `GatewayError` from a refusal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from django.http import JsonResponse

from apps.llm.refusals import LlmRefusal

# OpenAI's `error.type` by status (what its SDKs map to exception classes); anything else is a
# request error, and 5xx the server's.
_OPENAI_TYPES = {
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    413: "request_too_large",
    429: "rate_limit_error",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


@dataclass(frozen=True)
class GatewayError:
    """A refusal as the gateway answers it: the status, the provider-shaped body, Retry-After."""

    refusal: LlmRefusal

    @property
    def openai_type(self) -> str:
        status = self.refusal.http_status
        if status >= 500:
            return "server_error"
        return _OPENAI_TYPES.get(status, "invalid_request_error")

    @property
    def anthropic_type(self) -> str:
        return _ANTHROPIC_TYPES.get(self.refusal.http_status, "api_error")

    def openai(self, *, request_id: str | None = None) -> JsonResponse:
        """`{"error": {"message", "type", "param", "code"}}`, as OpenAI's API answers."""
        refusal = self.refusal
        body = {"message": refusal.message, "type": self.openai_type, "param": refusal.param, "code": refusal.code}
        return self._response({"error": body}, request_id)

    def anthropic(self, *, request_id: str | None = None) -> JsonResponse:
        """`{"type": "error", "error": {"type", "message"}}`, as Anthropic's Messages API answers."""
        body = {"type": "error", "error": {"type": self.anthropic_type, "message": self.refusal.message}}
        return self._response(body, request_id)

    def _response(self, body: Mapping[str, object], request_id: str | None) -> JsonResponse:
        response = JsonResponse(body, status=self.refusal.http_status)
        if self.refusal.retry_after_s is not None:
            response["Retry-After"] = str(self.refusal.retry_after_s)
        if request_id is not None:
            response["x-cognitionos-request-id"] = request_id
        return response
