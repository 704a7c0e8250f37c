"""What a log line says about the work it was written in: the request id, the organization, the
background work item and the Celery task.

Context variables, so each thread (and each asyncio task) keeps its own. Set by the request-id
middleware (apps.ops.request_id), the tenant task base (apps.tenants.tasks) and the work runtime
(apps.work.services.work_execute); read by the log filter (apps.ops.logs) and, when tracing is on,
copied onto the current span (apps.ops.tracing registers a listener). Low in the import graph on
purpose: every app may set a field, none of them imports apps.ops for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

__all__ = [
    "log_context",
    "log_context_fields",
    "log_context_listen",
    "log_context_request_end",
    "log_context_request_start",
]

_EMPTY: Mapping[str, str] = {}
_fields: ContextVar[Mapping[str, str]] = ContextVar("cognitionos_log_fields", default=_EMPTY)
# The request being served: its organization is read when a line is written, since the tenant
# middleware finds it after the request id was set.
_request: ContextVar[Any] = ContextVar("cognitionos_log_request", default=None)
# The tokens that end the current request's context.
_pending: ContextVar[tuple[Token[Any], Token[Mapping[str, str]]] | None] = ContextVar(
    "cognitionos_log_request_tokens", default=None
)
# Called with the fields just set (tracing copies them onto the current span); empty when off.
_listeners: list[Callable[[Mapping[str, str]], None]] = []


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Lines written inside carry these fields (None: left out), on top of the enclosing ones."""
    added = {name: str(value) for name, value in fields.items() if value is not None}
    token = _fields.set({**_fields.get(), **added})
    for listener in _listeners:
        listener(added)
    try:
        yield
    finally:
        _fields.reset(token)


def log_context_request_start(request: Any, *, request_id: str) -> None:
    """The request's context until `log_context_request_end`: its id now, its organization once the
    tenant middleware set it. Not a `with` block: Django logs a response's status ("Not Found: ...")
    after the middleware returned, and the WSGI server closes the response later still."""
    log_context_request_end()  # a request the server never closed
    _pending.set((_request.set(request), _fields.set({**_fields.get(), "request_id": request_id})))


def log_context_request_end() -> None:
    tokens = _pending.get()
    if tokens is None:
        return
    _pending.set(None)
    request_token, fields_token = tokens
    try:
        _fields.reset(fields_token)
        _request.reset(request_token)
    except ValueError:  # started in another context: forget it all the same
        _fields.set(_EMPTY)
        _request.set(None)


def log_context_fields() -> Mapping[str, str]:
    fields = _fields.get()
    request = _request.get()
    if request is not None and "organization" not in fields:
        tenant = getattr(request, "tenant", None)
        slug = getattr(tenant, "slug", None)
        if slug:
            return {**fields, "organization": slug}
    return fields


def log_context_listen(listener: Callable[[Mapping[str, str]], None]) -> Callable[[], None]:
    """Call `listener` whenever fields are set; returns the function that stops it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)
