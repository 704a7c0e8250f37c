"""django-prometheus in this stack: the PostgreSQL engine under django-tenants (ORIGINAL_BACKEND),
the HTTP middlewares, and the Redis cache backend, with tenancy intact."""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import cache
from django.db import ProgrammingError, connection, connections, transaction
from django.test import Client
from django_prometheus.db.common import DatabaseWrapperMixin  # type: ignore[import-untyped]
from prometheus_client import REGISTRY

from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from cognitionos.db_engine.base import exporting_cursor_class
from tests.conftest import LiveDb

DB = {"alias": "default", "vendor": "postgresql"}


def _value(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def _current_schema() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        (schema,) = cursor.fetchone()
    return str(schema)


def test_queries_on_a_tenants_connection_are_counted_and_the_schema_still_switches(
    two_tenants: tuple[Organization, Organization],
) -> None:
    tenant_a, tenant_b = two_tenants
    assert isinstance(connections["default"], DatabaseWrapperMixin)  # django-tenants wraps django-prometheus's engine
    before = _value("django_db_execute_total", DB)
    timed_before = _value("django_db_query_duration_seconds_count", DB)

    tenant_connection().set_tenant(tenant_a)
    assert _current_schema() == tenant_a.schema_name
    tenant_connection().set_tenant(tenant_b)
    assert _current_schema() == tenant_b.schema_name
    tenant_connection().set_schema_to_public()
    assert _current_schema() == "public"

    # Three statements at least (django-tenants' own SET search_path go through the same cursor).
    assert _value("django_db_execute_total", DB) >= before + 3
    assert _value("django_db_query_duration_seconds_count", DB) >= timed_before + 3


@pytest.mark.integration
def test_each_checkout_counts_its_statements_and_makes_no_new_cursor_class(live_db: LiveDb) -> None:
    """django-prometheus's engine made a new cursor class at every connection checkout; ours makes
    one per process and reuses it."""
    made = exporting_cursor_class.cache_info()
    for _ in range(3):
        connections["default"].close()  # the next statement takes a connection from the pool again
        before = _value("django_db_execute_total", DB)
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert _value("django_db_execute_total", DB) >= before + 1
    now = exporting_cursor_class.cache_info()
    assert now.hits >= made.hits + 3
    assert now.currsize == max(made.currsize, 1)


def test_a_failed_query_is_counted_by_type_and_a_savepoint_rollback_keeps_the_tenant(
    two_tenants: tuple[Organization, Organization],
) -> None:
    tenant_a, _ = two_tenants
    tenant_connection().set_tenant(tenant_a)
    errors = {**DB, "type": "UndefinedTable"}  # psycopg's class, counted before Django wraps it
    before = _value("django_db_errors_total", errors)
    with pytest.raises(ProgrammingError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table_here")
    assert _value("django_db_errors_total", errors) == before + 1
    assert _current_schema() == tenant_a.schema_name


def test_http_responses_are_counted_by_status_and_view_and_probes_are_not(db: None) -> None:
    client = Client()
    ok = {"status": "200", "view": "platform-home", "method": "GET"}
    not_found = {"status": "404", "view": "<unnamed view>", "method": "GET"}
    before_ok = _value("django_http_responses_total_by_status_view_method_total", ok)
    before_404 = _value("django_http_responses_total_by_status_view_method_total", not_found)
    before_all = _value("django_http_requests_before_middlewares_total")

    assert client.get("/", HTTP_HOST="localhost").status_code == 200
    assert client.get("/no/such/page", HTTP_HOST="localhost").status_code == 404
    # Answered before the metrics middleware (and host validation): probes and scrapes by pod IP.
    assert client.get("/health/live").status_code == 200
    assert client.get("/metrics", HTTP_HOST="10.0.0.7:8000").status_code == 200

    assert _value("django_http_responses_total_by_status_view_method_total", ok) == before_ok + 1
    assert _value("django_http_responses_total_by_status_view_method_total", not_found) == before_404 + 1
    assert _value("django_http_requests_before_middlewares_total") == before_all + 2
    assert (
        _value("django_http_requests_latency_seconds_by_view_method_count", {"view": "platform-home", "method": "GET"})
        > 0
    )


def test_the_request_series_count_each_request_once_and_a_malformed_length_is_no_error(db: None) -> None:
    """The response middleware keeps each labelled series it wrote and reads the headers from the
    environ: each request still adds one to its method's and transport's series, its body's bytes
    and, sent by a script, to the AJAX count; a Content-Length that is not a number counts as none."""
    client = Client()
    series = {
        "method": ("django_http_requests_total_by_method_total", {"method": "POST"}),
        "transport": ("django_http_requests_total_by_transport_total", {"transport": "http"}),
        "ajax": ("django_http_ajax_requests_total", {}),
        "bytes_count": ("django_http_requests_body_total_bytes_count", {}),
        "bytes_sum": ("django_http_requests_body_total_bytes_sum", {}),
    }
    before = {name: _value(*found) for name, found in series.items()}

    for _ in range(2):
        client.post("/", data=b"0123456789", content_type="text/plain", HTTP_HOST="localhost")
    client.post("/", data=b"", content_type="text/plain", HTTP_HOST="localhost", HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    malformed = client.get("/", HTTP_HOST="localhost", CONTENT_LENGTH="ten")

    assert malformed.status_code == 200
    after = {name: _value(*found) for name, found in series.items()}
    assert after["method"] == before["method"] + 3
    assert after["transport"] == before["transport"] + 4
    assert after["ajax"] == before["ajax"] + 1
    assert after["bytes_count"] == before["bytes_count"] + 4
    assert after["bytes_sum"] == before["bytes_sum"] + 20


def test_cache_gets_count_hits_and_misses_and_keys_stay_per_tenant(
    two_tenants: tuple[Organization, Organization],
) -> None:
    tenant_a, tenant_b = two_tenants
    redis = {"backend": "redis"}
    gets, hits, misses = (
        _value("django_cache_get_total", redis),
        _value("django_cache_get_hits_total", redis),
        _value("django_cache_get_misses_total", redis),
    )
    key = f"metrics-test-{uuid.uuid4().hex}"
    tenant_connection().set_tenant(tenant_a)
    cache.set(key, "a's", 30)
    assert cache.get(key) == "a's"
    tenant_connection().set_tenant(tenant_b)
    assert cache.get(key, "absent") == "absent"  # the tenant's key function still scopes the key
    tenant_connection().set_tenant(tenant_a)
    cache.delete(key)

    assert _value("django_cache_get_total", redis) == gets + 2
    assert _value("django_cache_get_hits_total", redis) == hits + 1
    assert _value("django_cache_get_misses_total", redis) == misses + 1
