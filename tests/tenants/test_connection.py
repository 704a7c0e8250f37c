"""Server-binding cursors: prepared statements follow the organization's schema."""

from __future__ import annotations

from apps.accounts.principals import Principal
from apps.jobs.services import job_submit
from apps.tenants.connection import organization_schema, server_binding_cursor
from apps.tenants.models import Organization
from apps.webhooks.selectors import webhook_endpoints_receiving
from apps.webhooks.services import webhook_endpoint_create
from apps.work.admission import waiting_exists

COUNT_JOBS = "SELECT count(*) FROM jobs_job"


def _count_jobs() -> int:
    with server_binding_cursor() as cursor:
        cursor.execute(COUNT_JOBS)
        return int(cursor.fetchone()[0])


def _prepared(statement: str) -> bool:
    with server_binding_cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement = %s::text", [statement])
        return int(cursor.fetchone()[0]) > 0


def test_a_statement_prepared_on_one_schema_reads_the_next_schema_it_runs_on(
    two_tenants: tuple[Organization, Organization],
) -> None:
    a, b = two_tenants
    with organization_schema(a):
        job_submit(organization=a, principal=Principal.system("test"), request={"model": "gpt-4o-mini", "prompt": "hi"})
        counts_a = [_count_jobs() for _ in range(8)]  # past psycopg's prepare_threshold (5)
        assert _prepared(COUNT_JOBS)
    with organization_schema(b):
        count_b = _count_jobs()
    assert counts_a == [1] * 8
    assert count_b == 0


def test_the_work_and_webhook_statements_answer_for_their_own_organization(
    two_tenants: tuple[Organization, Organization],
) -> None:
    a, b = two_tenants
    actor = Principal.system("test")
    with organization_schema(a):
        endpoint, _ = webhook_endpoint_create(organization=a, actor=actor, url="http://127.0.0.1:9/a", events=["job.*"])
    for _ in range(8):
        with organization_schema(a):
            assert webhook_endpoints_receiving(event_type="job.succeeded") == [endpoint.pk]
            assert webhook_endpoints_receiving(event_type="run.failed") == []
        with organization_schema(b):
            assert webhook_endpoints_receiving(event_type="job.succeeded") == []
            assert webhook_endpoints_receiving(event_type="job.failed", endpoint_id=endpoint.pk) == []
            assert waiting_exists(table="jobs_job") is False
