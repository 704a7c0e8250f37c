"""OpenTelemetry traces: the HTTP request (Django), the Celery task it sends and the one that runs
it (trace context in the message headers), and the provider call (httpx, which the openai and
anthropic SDKs use), in one trace, exported over OTLP (HTTP/protobuf).

On only when an endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`, or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and `OTEL_SDK_DISABLED` is not true. Off, `tracing_configure`
returns before importing anything of OpenTelemetry: no tracer provider, no instrumentation, no
middleware, nothing on the request path. The SDK's own environment variables apply
(`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`,
`OTEL_EXPORTER_OTLP_HEADERS`, ...).

Called from cognitionos/wsgi.py (before Django loads its middleware) and from the Celery worker's
and beat's init signals (cognitionos/celery.py).

What spans carry: routes, methods, status codes, task names and ids, hosts, and the organization
slug (`cognitionos.organization`), work kind and id. Never prompt content, bodies or headers: the
query string is taken off server spans (signed links carry tokens there) and client spans keep
only the origin of the URL (a customer's webhook URL may hold its secret in the path).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from apps.ops import logs
from cognitionos.logcontext import log_context_listen

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

__all__ = ["tracing_configure", "tracing_enabled", "tracing_install", "tracing_uninstall"]

logger = logging.getLogger(__name__)

# Probes and scrapes are not traced: they would be most of the spans and say nothing.
EXCLUDED_URLS = "health/live,health/ready,metrics"
_ATTRIBUTE_PREFIX = "cognitionos."

_installed: dict[str, Any] = {}


def tracing_enabled() -> bool:
    return bool(_installed)


def _endpoint_configured() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def tracing_configure(*, role: str) -> bool:
    """Turn tracing on for this process if an OTLP endpoint is configured; `role` (web, worker,
    beat) names the service unless OTEL_SERVICE_NAME does. Once per process; True when on."""
    if _installed or not _endpoint_configured():
        return bool(_installed)
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: f"cognitionos-{role}"}
    provider = TracerProvider(resource=Resource.create(attributes))
    # Batches leave from a thread of the SDK's (restarted in forked children); the exporter reads
    # the endpoint, headers, timeout and compression from the OTEL_EXPORTER_OTLP_* variables.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    tracing_install(provider=provider, django=role == "web")
    logger.info("tracing on: spans are exported over OTLP (%s)", role)
    return True


def tracing_install(*, provider: TracerProvider, django: bool) -> None:
    """Instrument Celery and httpx (and Django for a web process) with `provider`. The tests call
    it with an in-memory exporter's provider; `tracing_uninstall` undoes it."""
    if _installed:
        return
    from celery import signals
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    if django:
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        # Before Django builds its middleware chain: the instrumentor puts its own first.
        DjangoInstrumentor().instrument(
            tracer_provider=provider,
            excluded_urls=EXCLUDED_URLS,
            request_hook=_server_request_hook,
            response_hook=_server_response_hook,
        )
        _installed["django"] = DjangoInstrumentor()
    # Before the instrumentor's own publish handler (receivers run in the order connected).
    signals.before_task_publish.connect(_task_modules_loaded, weak=False)
    celery = CeleryInstrumentor()  # type: ignore[no-untyped-call] # its __init__ is not annotated
    celery.instrument(tracer_provider=provider)
    _installed["celery"] = celery
    # httpx for our own outgoing calls (webhooks), httpx2 for the openai and anthropic SDKs.
    for name, instrumentor in _httpx_instrumentors().items():
        instrumentor.instrument(tracer_provider=provider, request_hook=_client_request_hook)
        _installed[name] = instrumentor
    _installed["unlisten"] = log_context_listen(_context_to_span)
    logs.trace_ids_source(_trace_ids)


def tracing_uninstall() -> None:
    """Undo `tracing_install` (tests)."""
    from celery import signals

    signals.before_task_publish.disconnect(_task_modules_loaded)
    logs.trace_ids_source(None)
    unlisten = _installed.pop("unlisten", None)
    if unlisten is not None:
        unlisten()
    for name in ("httpx2", "httpx", "celery", "django"):
        instrumentor = _installed.pop(name, None)
        if instrumentor is not None:
            instrumentor.uninstrument()
    _installed.clear()


def _httpx_instrumentors() -> dict[str, Any]:
    from opentelemetry.instrumentation import httpx as instrumentation

    found: dict[str, Any] = {"httpx": instrumentation.HTTPXClientInstrumentor()}
    httpx2 = getattr(instrumentation, "HTTPX2ClientInstrumentor", None)  # only when httpx2 is installed
    if httpx2 is not None:
        found["httpx2"] = httpx2()
    return found


def _task_modules_loaded(sender: object = None, **_: Any) -> None:
    """The Celery instrumentation ends a send's span only for a task in the registry; a web process
    sends by name (`send_task`) tasks whose modules only a worker imports, and the span would stay
    open and current in the request's thread. Autodiscovery runs once, at the first such send."""
    from django.apps import apps

    from cognitionos.celery import app

    if isinstance(sender, str) and sender not in app.tasks and apps.ready:
        try:
            app.loader.import_default_modules()
        except Exception:  # a send must never fail for its span
            logger.warning("tracing: the tasks modules could not be imported", exc_info=True)


def _trace_ids() -> tuple[str, str] | None:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _context_to_span(fields: Mapping[str, str]) -> None:
    """Organization, work kind and id, task id as set for the logs, onto the current span."""
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        for name, value in fields.items():
            if name != "request_id":  # the server span has it already
                span.set_attribute(_ATTRIBUTE_PREFIX + name, value)


def _without_query(span: Span, names: tuple[str, ...]) -> None:
    attributes: Mapping[str, Any] = getattr(span, "attributes", None) or {}
    for name in names:
        value = attributes.get(name)
        if isinstance(value, str) and "?" in value:
            span.set_attribute(name, value.split("?", 1)[0])
    if "url.query" in attributes:
        span.set_attribute("url.query", "")


def _server_request_hook(span: Span, request: Any) -> None:
    if not span.is_recording():
        return
    _without_query(span, ("http.target", "http.url", "url.full"))
    request_id = getattr(request, "request_id", None)
    if request_id is None:
        request_id = request.META.get("HTTP_X_REQUEST_ID")
    if request_id:
        span.set_attribute(_ATTRIBUTE_PREFIX + "request_id", str(request_id)[:128])


def _server_response_hook(span: Span, request: Any, response: Any) -> None:
    if not span.is_recording():
        return
    tenant = getattr(request, "tenant", None)
    slug = getattr(tenant, "slug", None)
    if slug:
        span.set_attribute(_ATTRIBUTE_PREFIX + "organization", slug)
    request_id = getattr(request, "request_id", None)
    if request_id:
        span.set_attribute(_ATTRIBUTE_PREFIX + "request_id", request_id)


def _client_request_hook(span: Span, request: Any) -> None:
    """Outgoing calls keep the origin of their URL only."""
    if not span.is_recording():
        return
    url = request.url
    if isinstance(url, tuple):  # (scheme, host, port, target) as bytes
        scheme, host, port = (part.decode("ascii", "replace") if isinstance(part, bytes) else part for part in url[:3])
    else:  # httpx.URL or httpx2.URL
        scheme, host, port = url.scheme, url.host, url.port
    host = f"[{host}]" if ":" in str(host) else host  # an IPv6 address
    origin = f"{scheme}://{host}" + (f":{port}" if port else "")
    attributes: Mapping[str, Any] = getattr(span, "attributes", None) or {}
    for name in ("http.url", "url.full"):
        if name in attributes:
            span.set_attribute(name, origin)
    for name in ("http.target", "url.path", "url.query"):
        if name in attributes:
            span.set_attribute(name, "")
