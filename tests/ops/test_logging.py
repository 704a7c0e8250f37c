"""Log lines: one JSON object per line on the configured stderr handler, with the request id,
organization, work item and task of the work they were written in, and no secrets."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from celery import shared_task
from django.conf import settings
from django.test import Client

from apps.accounts.principals import Principal
from apps.apikeys.keys import key_generate
from apps.jobs.models import Job, JobStatus
from apps.jobs.services import JOB, job_submit
from apps.ops.logs import REDACTED, JsonFormatter, TextFormatter
from apps.ops.request_id import REQUEST_ID_MAX_LENGTH, request_id_accept
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.tasks import TenantTask
from apps.work.services import work_execute
from cognitionos.logcontext import log_context
from tests.llm.conftest import _fresh_llm_state
from tests.support.fake_provider import FakeProvider

__all__ = ["_fresh_llm_state"]

logger = logging.getLogger("tests.ops.logging")


class Lines:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def text(self) -> str:
        return self.stream.getvalue()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines()]


def _stderr_handler() -> logging.StreamHandler[Any]:
    """The handler settings.LOGGING puts on the root logger (not pytest's capture handlers)."""
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and isinstance(handler.formatter, JsonFormatter | TextFormatter)
    ]
    assert len(handlers) == 1, logging.getLogger().handlers
    return handlers[0]


@contextmanager
def captured(*, formatter: logging.Formatter | None = None) -> Iterator[Lines]:
    """What the configured stderr handler writes, with its own formatter and filters."""
    handler = _stderr_handler()
    stream = io.StringIO()
    previous = handler.setStream(stream)
    previous_formatter = handler.formatter
    if formatter is not None:
        handler.setFormatter(formatter)
    try:
        yield Lines(stream)
    finally:
        handler.setFormatter(previous_formatter)
        handler.setStream(previous)


def test_the_test_settings_log_json_through_the_context_filter() -> None:
    handler = _stderr_handler()
    assert settings.LOG_FORMAT == "json"
    assert isinstance(handler.formatter, JsonFormatter)
    assert [type(f).__name__ for f in handler.filters] == ["ContextFilter"]


def test_a_line_is_one_json_object_with_timestamp_level_logger_message_and_context() -> None:
    with captured() as lines, log_context(organization="acme", work_kind="job", work_id=42):
        logger.warning("a %s line\nwith a newline", "multi", extra={"attempt": 2})
    logger.warning("outside")  # not captured: the stream is restored
    text = lines.text()
    assert text.count("\n") == 1  # one object, one line, the newline escaped inside it
    (record,) = lines.records()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", record["timestamp"])
    assert record["level"] == "WARNING" and record["logger"] == "tests.ops.logging"
    assert record["message"] == "a multi line\nwith a newline"
    assert record["organization"] == "acme" and record["work_kind"] == "job" and record["work_id"] == "42"
    assert record["attempt"] == 2
    assert "request_id" not in record and "trace_id" not in record  # not in a request, tracing off


def test_context_fields_are_dropped_when_the_block_ends_and_nest() -> None:
    with captured() as lines:
        with log_context(organization="acme"):
            with log_context(work_kind="job", work_id=1):
                logger.warning("inner")
            logger.warning("outer")
        logger.warning("none")
    inner, outer, none = lines.records()
    assert (inner["organization"], inner["work_id"]) == ("acme", "1")
    assert outer["organization"] == "acme" and "work_id" not in outer
    assert "organization" not in none


SECRETS = {
    "our API key": key_generate()[2],
    "OpenAI key": "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
    "Anthropic key": "sk-ant-api03-Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0",
    "Stripe secret key": "sk_live_51H8abcdefGHIJKLmnopQRST",
    "Stripe restricted key": "rk_test_51H8zyxwvuTSRQponmlk",
    "Stripe webhook secret": "whsec_0123456789abcdefABCDEF",
    "bearer token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    "basic credentials": "dXNlcjpodW50ZXIyaHVudGVyMg==",
    "password": "correct-horse-battery-staple",
    "database password": "db-pass-Q7w8e9r0",
    "custom header key": "provider-key-Plain0123456789",
}


def _logged_with_every_secret() -> None:
    try:
        raise RuntimeError(f"the provider refused key {SECRETS['OpenAI key']}")
    except RuntimeError:
        logger.exception(
            "calling with %s and %s (Stripe %s, %s, signing %s); password=%s; x-api-key: %s; url %s; settings %s / %s",
            SECRETS["our API key"],
            SECRETS["Anthropic key"],
            SECRETS["Stripe secret key"],
            SECRETS["Stripe restricted key"],
            SECRETS["Stripe webhook secret"],
            SECRETS["password"],
            SECRETS["custom header key"],
            f"postgres://cognitionos:{SECRETS['database password']}@db.internal:5432/app",
            settings.SECRET_KEY,
            settings.API_KEY_HASH_KEY,
            extra={
                "headers": {
                    "Authorization": f"Bearer {SECRETS['bearer token']}",
                    "Proxy-Authorization": f"Basic {SECRETS['basic credentials']}",
                    "Content-Type": "application/json",
                },
                "webhook_secret": SECRETS["Stripe webhook secret"],
                "stripe_event": {"data": {"api_key": "anything-at-all"}},
                "api_key": "anything",
                "input_tokens": 12,
                "model": "gpt-4o-mini",
            },
        )


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_secrets_are_never_written_in_either_format(log_format: str) -> None:
    formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    with captured(formatter=formatter) as lines:
        _logged_with_every_secret()
    written = lines.text()
    for name, secret in {
        **SECRETS,
        "SECRET_KEY": settings.SECRET_KEY,
        "API_KEY_HASH_KEY": settings.API_KEY_HASH_KEY,
        "a secret key's value": "anything-at-all",
    }.items():
        assert secret not in written, f"{name} was logged: {written}"
    assert REDACTED in written
    # What is not secret is still there: the line stays useful.
    our_key_prefix = SECRETS["our API key"][: len("cos_") + 12 + 1]  # cos_<12 hex>_
    for kept in ("calling with", our_key_prefix, "sk-", "sk_live_", "whsec_", "db.internal:5432"):
        assert kept in written, kept
    assert "RuntimeError: the provider refused key sk-" in written  # the traceback, redacted
    if log_format == "json":
        (record,) = lines.records()
        assert record["headers"] == {
            "Authorization": REDACTED,
            "Proxy-Authorization": REDACTED,
            "Content-Type": "application/json",
        }
        assert record["webhook_secret"] == REDACTED and record["api_key"] == REDACTED
        assert record["input_tokens"] == 12 and record["stripe_event"] == {"data": {"api_key": REDACTED}}
        assert record["model"] == "gpt-4o-mini"


def test_a_request_id_is_accepted_only_when_sane() -> None:
    assert request_id_accept("req-7f3a.b_c:9") == "req-7f3a.b_c:9"
    assert request_id_accept("a" * REQUEST_ID_MAX_LENGTH) == "a" * REQUEST_ID_MAX_LENGTH
    for bad in (None, "", "a" * (REQUEST_ID_MAX_LENGTH + 1), "x\nforged line", "id with spaces", "-starts", "é"):
        generated = request_id_accept(bad)
        assert re.fullmatch(r"[0-9a-f]{32}", generated), bad


def test_the_response_echoes_the_request_id_or_a_new_one(client: Client) -> None:
    given = client.get("/health/live", HTTP_X_REQUEST_ID="lb-1234")
    assert given["X-Request-ID"] == "lb-1234"
    forged = client.get("/health/live", HTTP_X_REQUEST_ID='x" level="CRITICAL')
    assert re.fullmatch(r"[0-9a-f]{32}", forged["X-Request-ID"])
    first, second = client.get("/health/live"), client.get("/health/live")
    assert first["X-Request-ID"] != second["X-Request-ID"]


def test_lines_written_in_a_request_carry_its_id_and_its_organization(
    two_tenants: tuple[Organization, Organization],
) -> None:
    """Two organizations' portals: each request's lines name its own organization and id."""
    first, second = two_tenants
    with captured() as lines:
        for organization, request_id in ((first, "req-a"), (second, "req-b")):
            response = Client(HTTP_HOST=f"{organization.slug}.localhost").get(
                "/no-such-page/", HTTP_X_REQUEST_ID=request_id
            )
            assert response.status_code == 404 and response["X-Request-ID"] == request_id
        Client(HTTP_HOST="localhost").get("/no-such-page/", HTTP_X_REQUEST_ID="req-platform")
        logger.warning("after the requests")
    not_found = [record for record in lines.records() if record["logger"] == "django.request"]
    assert [(r["request_id"], r.get("organization")) for r in not_found] == [
        ("req-a", first.slug),
        ("req-b", second.slug),
        ("req-platform", "public"),
    ]
    assert all(r["message"] == "Not Found: /no-such-page/" for r in not_found)
    after = lines.records()[-1]
    assert "request_id" not in after and "organization" not in after


@shared_task(base=TenantTask, name="tests.ops.test_logging.log_probe")
def log_probe() -> str:
    logger.warning("inside the task")
    schema: str = tenant_connection().schema_name
    return schema


def test_lines_written_in_a_tenant_task_carry_the_organization_and_task_id(
    two_tenants: tuple[Organization, Organization],
) -> None:
    with captured() as lines:
        for organization in two_tenants:
            result = log_probe.apply(kwargs={"tenant_id": organization.pk}, task_id=f"task-{organization.slug}")
            assert result.get() == organization.schema_name
    records = [record for record in lines.records() if record["message"] == "inside the task"]
    assert [(r["organization"], r["task_id"]) for r in records] == [
        (organization.slug, f"task-{organization.slug}") for organization in two_tenants
    ]


def test_lines_written_while_work_runs_carry_the_work_item(tenant: Organization, fake_provider: FakeProvider) -> None:
    fake_provider.fail_next(20, status=500)
    job = job_submit(
        organization=tenant,
        principal=Principal(kind="api_key", id="7", label="tests (cos_x)"),
        request={"messages": [{"role": "user", "content": "Say hello"}], "model": "gpt-4o-mini", "max_tokens": 20},
    )
    with captured() as lines, log_context(organization=tenant.slug):
        work_execute(organization=tenant, kind=JOB, item_id=job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.attempts == 1  # the provider's 500s: retried later
    retried = [record for record in lines.records() if "retried later" in record["message"]]
    assert retried, lines.text()
    assert all((r["work_kind"], r["work_id"], r["organization"]) == ("job", str(job.pk), tenant.slug) for r in retried)
    assert "Say hello" not in lines.text()  # the prompt is never logged
    assert Job.objects.filter(pk=job.pk).exists()


def test_a_provider_call_writes_no_line_of_the_http_client_at_info(
    tenant: Organization, fake_provider: FakeProvider
) -> None:
    """httpx2 (the SDKs' client) logs every request it sends at INFO: a line per call, already in
    the ledger, metrics and traces. Quiet at the INFO level the platform runs at; ours still log."""
    assert logging.getLogger().isEnabledFor(logging.INFO)
    job = job_submit(
        organization=tenant,
        principal=Principal(kind="api_key", id="7", label="tests (cos_x)"),
        request={"messages": [{"role": "user", "content": "Say hello"}], "model": "gpt-4o-mini", "max_tokens": 20},
    )
    with captured() as lines:
        work_execute(organization=tenant, kind=JOB, item_id=job.pk)
        logger.info("after the call")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and len(fake_provider.calls) == 1
    assert [record["logger"] for record in lines.records()] == ["tests.ops.logging"], lines.text()
