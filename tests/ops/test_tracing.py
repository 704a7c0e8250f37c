"""OpenTelemetry traces: one trace from the HTTP request through the Celery task (a real worker
process) to the provider call; nothing of OpenTelemetry loaded when no endpoint is configured."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.conf import settings
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from rest_framework.test import APIClient

from apps.apikeys.keys import key_split
from apps.apikeys.services import apikey_create
from apps.ops import tracing
from apps.ops.logs import ContextFilter, JsonFormatter
from tests.conftest import LiveDb
from tests.factories import TEST_ACTOR
from tests.support.fake_provider import FakeProvider
from tests.support.processes import database_url_for_subprocess, python_run
from tests.support.worker import celery_worker

PROMPT = "Tell me the secret plan for Tuesday"
RUN_TASK = "run/apps.work.tasks.work_run"
SEND_TASK = "apply_async/apps.work.tasks.work_run"


@dataclass
class CollectedSpan:
    """A span as an OTLP collector receives it (ids as hex)."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    service: str


@dataclass
class Collector:
    """A tiny OTLP/HTTP collector on 127.0.0.1: decodes the protobuf export requests it is sent."""

    url: str = ""
    spans: list[CollectedSpan] = field(default_factory=list)
    requests: int = 0

    def wait_for(self, *names: str, trace_id: str | None = None, timeout_s: float = 30) -> list[CollectedSpan]:
        """The spans (of one trace, given its id) once they hold a span of each name. A test's worker
        may first run messages an earlier test left in the queue: their spans are other traces'."""
        deadline = time.monotonic() + timeout_s
        while not all(any(span.name == name for span in self._of(trace_id)) for name in names):
            assert time.monotonic() < deadline, [span.name for span in self.spans]
            time.sleep(0.1)
        return self._of(trace_id)

    def _of(self, trace_id: str | None) -> list[CollectedSpan]:
        return [span for span in self.spans if trace_id is None or span.trace_id == trace_id]


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind in ("string_value", "int_value", "bool_value", "double_value") else str(value)


@contextmanager
def otlp_collector() -> Iterator[Collector]:
    collector = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            export = ExportTraceServiceRequest.FromString(body)
            for resource_spans in export.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        collector.spans.append(
                            CollectedSpan(
                                name=span.name,
                                kind=span.kind,
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_span_id=span.parent_span_id.hex(),
                                attributes={a.key: _value(a.value) for a in span.attributes},
                                service=str(resource.get("service.name")),
                            )
                        )
            collector.requests += 1
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    collector.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def traced_web() -> Iterator[InMemorySpanExporter]:
    """This process traced as a web process, its spans kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    middleware_before = list(settings.MIDDLEWARE)
    tracing.tracing_install(provider=provider, django=True)
    try:
        assert tracing.tracing_enabled() and settings.MIDDLEWARE[0].startswith("opentelemetry.")
        yield exporter
    finally:
        tracing.tracing_uninstall()
        provider.shutdown()
    assert list(settings.MIDDLEWARE) == middleware_before


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def _secret_of(key: str) -> str:
    # The secret itself may hold "_", so split where the key's parser does, not at the last one.
    split = key_split(key)
    assert split is not None
    return split[1]


def _one(spans: list[Any], description: str) -> Any:
    assert len(spans) == 1, (description, spans)
    return spans[0]


@pytest.mark.integration
def test_one_trace_spans_the_request_the_worker_task_and_the_provider_call(
    live_db: LiveDb, traced_web: InMemorySpanExporter
) -> None:
    organization = live_db.organization(slug="traces-e2e")
    key = apikey_create(organization=organization, name="traces", actor=TEST_ACTOR).key
    client = APIClient(HTTP_HOST="localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    with otlp_collector() as collector, FakeProvider() as provider:
        worker_env = {
            "OPENAI_API_KEY": "sk-test-platform",
            "OPENAI_BASE_URL": provider.openai_base_url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: export soon after the task ends
        }
        with celery_worker(env=worker_env, concurrency=2):
            submitted = client.post(
                "/api/v1/jobs",
                {"prompt": PROMPT, "model": "gpt-4o-mini", "max_tokens": 20},
                format="json",
                HTTP_X_REQUEST_ID="req-traces-1",
            )
            assert submitted.status_code == 202, submitted.content
            job_id = submitted.json()["id"]
            deadline = time.monotonic() + 30
            while (body := client.get(f"/api/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
                assert time.monotonic() < deadline, body
                time.sleep(0.2)
            assert body["status"] == "succeeded", body
            # The web process (in memory): the request's server span, and the task it sent as its child.
            web_spans: list[ReadableSpan] = list(traced_web.get_finished_spans())
            server = _one(
                [
                    s
                    for s in web_spans
                    if s.kind == SpanKind.SERVER
                    and s.attributes is not None
                    and s.attributes.get("http.method") == "POST"
                    and s.attributes.get("cognitionos.request_id") == "req-traces-1"
                ],
                "the POST's server span",
            )
            worker_spans = collector.wait_for(RUN_TASK, "POST", trace_id=_hex(server.context.trace_id, 32))
        provider_origin = provider.base_url
    assert len(provider.calls) == 1

    assert server.parent is None  # the root: the request came in without a trace
    assert server.attributes is not None
    assert server.attributes["cognitionos.organization"] == organization.slug
    assert server.attributes.get("http.route") == "api/v1/jobs"
    trace_id = _hex(server.context.trace_id, 32)
    sent = _one([s for s in web_spans if s.name == SEND_TASK], "the task sent")
    assert sent.kind == SpanKind.PRODUCER and _hex(sent.context.trace_id, 32) == trace_id
    assert sent.parent is not None and sent.parent.span_id == server.context.span_id

    # The worker process (over OTLP): the task's run, child of the send, and the provider call in it.
    run = _one([s for s in worker_spans if s.name == RUN_TASK], "the task run")
    assert run.kind == trace_pb2.Span.SPAN_KIND_CONSUMER and run.service == "cognitionos-worker"
    assert run.trace_id == trace_id
    assert run.parent_span_id == _hex(sent.context.span_id, 16)
    assert run.attributes["cognitionos.organization"] == organization.slug
    assert run.attributes["cognitionos.work_kind"] == "job" and run.attributes["cognitionos.work_id"]
    call = _one(
        [s for s in worker_spans if s.kind == trace_pb2.Span.SPAN_KIND_CLIENT and s.trace_id == trace_id],
        "the provider call",
    )
    assert call.name == "POST" and call.parent_span_id == run.span_id
    assert call.attributes.get("http.status_code") == 200
    # Only the origin of the provider's URL; nothing of the prompt or the key on any span.
    assert call.attributes.get("http.url") == provider_origin
    everything = json.dumps(
        [dict(s.attributes or {}) for s in web_spans] + [s.attributes for s in worker_spans], default=str
    )
    for secret in (PROMPT, "Tuesday", key, _secret_of(key), "sk-test-platform"):
        assert secret not in everything


@pytest.fixture
def settings_env(db: None) -> dict[str, str]:
    """The environment of a process started on the test database, with no OTEL_ variable."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env.update({"DATABASE_URL": database_url_for_subprocess(), "DJANGO_SETTINGS_MODULE": "cognitionos.settings.test"})
    return env


def test_tracing_off_loads_nothing_of_opentelemetry_in_web_and_worker_processes(settings_env: dict[str, str]) -> None:
    """No endpoint: the web application and a worker's init start, and neither the SDK nor any
    instrumentation is imported, nor the Django middleware added."""
    script = """
import json, sys
import cognitionos.wsgi
from celery import signals
from cognitionos.celery import app
signals.worker_init.send(sender=None)
signals.beat_init.send(sender=None)
from django.conf import settings
from apps.ops import tracing
from apps.ops.logs import ContextFilter, JsonFormatter
# (an entry None is a module kept from loading: cognitionos/celery.py keeps redis-py from the SDK)
loaded = sorted(m for m, module in sys.modules.items() if module is not None
                and m.startswith(("opentelemetry.sdk", "opentelemetry.instrumentation", "opentelemetry.exporter")))
print(json.dumps({"loaded": loaded, "enabled": tracing.tracing_enabled(),
                  "middleware": [m for m in settings.MIDDLEWARE if "opentelemetry" in m]}))
"""
    report = json.loads(python_run(script, env=settings_env).strip().splitlines()[-1])
    assert report == {"loaded": [], "enabled": False, "middleware": []}


def test_the_sdk_switch_turns_tracing_off_even_with_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.tracing_configure(role="web") is False and not tracing.tracing_enabled()


def test_log_lines_carry_the_trace_and_span_ids_while_tracing(traced_web: InMemorySpanExporter) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    log = logging.getLogger("tests.ops.tracing")
    log.addHandler(handler)
    try:
        with TracerProvider().get_tracer("tests").start_as_current_span("work") as span:
            log.warning("inside")
        log.warning("outside")
    finally:
        log.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["trace_id"] == _hex(span.get_span_context().trace_id, 32)
    assert inside["span_id"] == _hex(span.get_span_context().span_id, 16)
    assert "trace_id" not in outside and "span_id" not in outside


def test_a_web_process_sending_a_task_by_name_ends_the_send_span(settings_env: dict[str, str]) -> None:
    """A web process has not imported the tasks modules (a worker does): the send's span still
    ends (exported), and the request's thread is left without it as its current span."""
    script = """
import json
import cognitionos.wsgi
from celery import current_app
from opentelemetry import trace
from apps.ops import tracing
from apps.ops.logs import ContextFilter, JsonFormatter
assert tracing.tracing_enabled()
with trace.get_tracer("probe").start_as_current_span("request") as request:
    current_app.send_task("apps.work.tasks.work_run", kwargs={"tenant_id": 0, "kind": "job", "item_id": "0"},
                          queue=QUEUE)
    after = trace.get_current_span()
trace.get_tracer_provider().force_flush()
print(json.dumps({"current_after_send_is_request": after is request}))
"""
    queue = f"traces-probe-{uuid.uuid4().hex}"  # no worker reads it
    with otlp_collector() as collector:
        env = {**settings_env, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        output = python_run(f"QUEUE = {queue!r}\n{script}", env=env)
        spans = collector.wait_for(SEND_TASK, "request", timeout_s=10)
    assert json.loads(output.strip().splitlines()[-1]) == {"current_after_send_is_request": True}
    sent = _one([s for s in spans if s.name == SEND_TASK], "the send")
    request = _one([s for s in spans if s.name == "request"], "the request")
    assert sent.parent_span_id == request.span_id and sent.service == "cognitionos-web"
