"""Every request gets an id: the caller's `X-Request-ID` when it is a sane one (letters, digits and
`._:-`, at most 128 characters, starting with a letter or digit), else a new one. Every log line
written while the request is served carries it (cognitionos.logcontext), and the response echoes it
in `X-Request-ID`, so a caller can quote it to support and an operator can find the lines.

First in MIDDLEWARE: the tenant middleware's and the health probes' lines carry it too.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse

from cognitionos.logcontext import log_context_request_end, log_context_request_start

__all__ = ["REQUEST_ID_HEADER", "RequestIdMiddleware", "request_id_accept"]

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_MAX_LENGTH = 128
_ALLOWED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]*")


def request_id_accept(value: str | None) -> str:
    """The caller's id when it is sane (never a way to write into the logs), else a new one."""
    if value and len(value) <= REQUEST_ID_MAX_LENGTH and _ALLOWED.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_accept(request.META.get("HTTP_X_REQUEST_ID"))
        request.request_id = request_id  # type: ignore[attr-defined] # read by views that report it
        # Ended when the server closes the response (request_finished), so that Django's own line
        # about the response and anything a streamed body logs carry the request's context too.
        log_context_request_start(request, request_id=request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


def _request_finished(**_: object) -> None:
    log_context_request_end()


request_finished.connect(_request_finished, dispatch_uid="apps.ops.request_id")
