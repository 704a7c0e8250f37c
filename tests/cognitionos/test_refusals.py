"""A service's refusal reaches the REST API's one error shape without the view translating it."""

from __future__ import annotations

from apps.api.errors import api_exception_handler
from apps.llm.calls import LlmRefusal
from cognitionos.refusals import Refusal


class _NameTaken(Refusal):
    http_status = 409
    code = "name_taken"


def test_any_refusal_is_rendered_in_the_api_error_shape() -> None:
    response = api_exception_handler(_NameTaken("a thing named x already exists"), {})
    assert response is not None and response.status_code == 409
    assert response.data == {
        "error": {
            "message": "a thing named x already exists",
            "type": "conflict_error",
            "code": "name_taken",
            "param": None,
        }
    }


def test_the_engines_refusal_keeps_its_status_field_and_retry_after() -> None:
    refused = LlmRefusal(429, "rate_limit_exceeded", "60 requests per minute", retryable=True, retry_after_s=7)
    response = api_exception_handler(refused, {})
    assert response is not None and response.status_code == 429
    assert response.data["error"]["code"] == "rate_limit_exceeded"
    assert response["Retry-After"] == "7"
    bad_field = api_exception_handler(LlmRefusal(400, "unsupported_parameter", "no", param="stream"), {})
    assert bad_field is not None and bad_field.data["error"]["param"] == "stream"
