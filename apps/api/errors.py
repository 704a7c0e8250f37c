"""One error shape for the whole API (the same as the OpenAI-compatible endpoints use):

    {"error": {"message": "...", "type": "...", "code": "...", "param": "...", "details": ...}}

`code` is machine-readable and stable; `message` is for people; `param` names the field at fault.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework import views as drf_views  # a module: authentication imports this while DRF loads
from rest_framework.response import Response

from cognitionos.refusals import Refusal

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
}
_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.ParseError: "invalid_json",
    exceptions.NotAuthenticated: "authentication_required",
    exceptions.AuthenticationFailed: "invalid_api_key",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limit_exceeded",
    exceptions.ValidationError: "invalid_request",
}


CSRF_ADVICE = "with a member's session send the X-CSRFToken header, or call the API with an API key alone"


class ApiError(exceptions.APIException):
    """Raise from a view for any refusal the framework has no exception for."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.error_code = code
        self.param = param
        self.extra_headers = headers or {}
        self.details = details


def error_body(
    *, status_code: int, code: str, message: str, param: str | None = None, details: Any = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message": message,
        "type": _TYPES.get(status_code, "api_error"),
        "code": code,
        "param": param,
    }
    if details is not None:
        body["details"] = details
    return {"error": body}


def _first_problem(detail: Any, path: str = "") -> tuple[str | None, str]:
    """The path of the first invalid field (`steps.1.prompt`) and its message."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = "" if key == "non_field_errors" else str(key)
            return _first_problem(value, f"{path}.{name}".strip(".") if name else path)
    if isinstance(detail, list) and detail:
        for index, value in enumerate(detail):
            if value:  # list serializers report valid items as empty dicts
                child = path if not isinstance(value, dict | list) else f"{path}.{index}".strip(".")
                return _first_problem(value, child)
    return (path or None), str(detail)


def refusal_api_error(refusal: Refusal) -> ApiError:
    """A service's refusal in the API's error shape (the one translation; views needn't catch them)."""
    headers = {"Retry-After": str(refusal.retry_after_s)} if refusal.retry_after_s is not None else None
    return ApiError(
        refusal.http_status,
        refusal.code,
        refusal.request_message(),
        param=refusal.param,
        headers=headers,
        details=refusal.details,
    )


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, Refusal):
        exc = refusal_api_error(exc)
    elif isinstance(exc, Http404 | ObjectDoesNotExist):  # another organization's object is simply absent
        exc = exceptions.NotFound("no such object in this organization")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_views.exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    if isinstance(exc, ApiError):
        body = error_body(
            status_code=exc.status_code,
            code=exc.error_code,
            message=str(exc.detail),
            param=exc.param,
            details=exc.details,
        )
        for name, value in exc.extra_headers.items():
            response[name] = value
    elif isinstance(exc, exceptions.ValidationError):
        param, message = _first_problem(exc.detail)
        body = error_body(
            status_code=status.HTTP_400_BAD_REQUEST,
            code="invalid_request",
            message=f"{param}: {message}" if param else message,
            param=param,
            details=exc.detail,
        )
    else:
        code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), "error")
        body = error_body(status_code=response.status_code, code=code, message=str(exc.detail))
    response.data = body
    return response
