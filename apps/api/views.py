"""Answers under /api/ and /v1/ that Django, not a view of ours, would give: always JSON in the one
error shape (apps.api.errors), never an HTML page. Elsewhere Django's own pages are kept."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import csrf, defaults
from django.views.decorators.csrf import csrf_exempt

from apps.api.errors import CSRF_ADVICE, error_body

_JSON_PREFIXES = ("/api/", "/v1/")


def _is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith(_JSON_PREFIXES)


def _json_error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(status_code=status, code=code, message=message), status=status)


@csrf_exempt  # it changes nothing, and a write to an unknown path is a 404 whoever sends it
def api_not_found(request: HttpRequest, unknown: str) -> JsonResponse:
    """Unknown API paths answer in the API's error shape, not with an HTML page."""
    return _json_error(404, "unknown_endpoint", f"no endpoint at {request.path}")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: a session's write without its CSRF token."""
    if _is_api(request):
        return _json_error(
            403,
            "csrf_failed",
            f"CSRF Failed: {reason}; {CSRF_ADVICE}",
        )
    return csrf.csrf_failure(request, reason)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        if isinstance(exception, RequestDataTooBig):  # a body read whole somewhere, over Django's limit
            return _json_error(413, "request_too_large", "the request body is too large")
        return _json_error(400, "bad_request", "the request could not be understood")
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _json_error(403, "permission_denied", "you may not do this")
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _json_error(404, "unknown_endpoint", f"no endpoint at {request.path}")
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return _json_error(500, "server_error", "the server failed to answer; the error was logged")
    return defaults.server_error(request)
