"""The pass of `migrate` over organizations (apps.tenants.rollout): which schemas are behind, the
SQL replayed in each, one transaction per schema, failures reported by name, resumption."""

from __future__ import annotations

import threading
import time
from io import StringIO

import psycopg
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context

from apps.tenants import rollout
from apps.tenants.connection import tenant_connection
from apps.tenants.migrating import RoutedMigrationExecutor
from apps.tenants.models import Organization
from apps.tenants.rollout import organizations_migrate
from apps.tenants.template import migration_fingerprint, schema_migrations
from tests.conftest import LiveDb
from tests.tenants.test_cloning import CATALOG_QUERIES, _catalog

pytestmark = pytest.mark.integration

# A leaf migration of a tenant app that only adds an index: taken back to make a schema "behind".
BEHIND = ("jobs", "0005_agent_moves_to_agents")
MISSING = "jobs.0006_job_list_index"


def _put_behind(organization: Organization) -> None:
    """Unapply the jobs list index in the organization's schema, and record its true (older) state,
    as if it had been created before that migration existed."""
    with schema_context(organization.schema_name):
        RoutedMigrationExecutor(connection).migrate([BEHIND])
    tenant_connection().set_schema_to_public()
    older = migration_fingerprint(schema_migrations(organization.schema_name))
    Organization.objects.filter(pk=organization.pk).update(migration_state=older)


def _index_exists(schema: str, name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_indexes WHERE schemaname = %s AND indexname = %s", [schema, name])
        return cursor.fetchone() is not None


def test_only_schemas_behind_are_visited_and_end_equal_to_the_template(live_db: LiveDb) -> None:
    behind, current = live_db.organization(slug="roll-behind"), live_db.organization(slug="roll-current")
    _put_behind(behind)
    assert MISSING not in schema_migrations(behind.schema_name)
    assert not _index_exists(behind.schema_name, "jobs_job_listed")

    summary = organizations_migrate()

    assert summary.migrated == [behind.schema_name]
    assert summary.considered == 1 and summary.failures == []
    assert schema_migrations(behind.schema_name) == schema_migrations("_template")
    template, migrated = _catalog("_template"), _catalog(behind.schema_name)
    for kind in CATALOG_QUERIES:
        assert migrated[kind] == template[kind], kind
    behind.refresh_from_db()
    current.refresh_from_db()
    assert behind.migration_state == current.migration_state == summary.target
    assert organizations_migrate().considered == 0  # nothing behind: one query, nothing visited


def test_django_executor_path_gives_the_same_schema(live_db: LiveDb, monkeypatch: pytest.MonkeyPatch) -> None:
    organization = live_db.organization(slug="roll-executor")
    _put_behind(organization)
    monkeypatch.setattr(rollout, "_renders_to_sql", lambda plan: False)  # as for a RunPython migration
    monkeypatch.setattr(rollout, "_rendered", {})

    summary = organizations_migrate()

    assert summary.migrated == [organization.schema_name]
    assert _index_exists(organization.schema_name, "jobs_job_listed")
    assert schema_migrations(organization.schema_name) == schema_migrations("_template")


def test_parallel_pass_reports_a_failed_schema_by_name_and_resumes(live_db: LiveDb) -> None:
    organizations = [live_db.organization(slug=f"roll-par-{n}") for n in range(4)]
    for organization in organizations:
        _put_behind(organization)
    broken = organizations[2]
    with connection.cursor() as cursor:  # the index the migration adds, already there under its name
        cursor.execute(f'CREATE INDEX jobs_job_listed ON "{broken.schema_name}".jobs_job (id)')
    before = Organization.objects.get(pk=broken.pk).migration_state

    summary = organizations_migrate(jobs=2, chunk_size=1)  # forked processes, one schema per task

    assert sorted(summary.migrated) == sorted(o.schema_name for o in organizations if o != broken)
    assert [f.schema for f in summary.failures] == [broken.schema_name]
    assert "already exists" in summary.failures[0].error
    # Its transaction rolled back whole: no migration recorded, state unchanged.
    assert MISSING not in schema_migrations(broken.schema_name)
    assert Organization.objects.get(pk=broken.pk).migration_state == before

    with connection.cursor() as cursor:
        cursor.execute(f'DROP INDEX "{broken.schema_name}".jobs_job_listed')
    resumed = organizations_migrate(jobs=2, chunk_size=1)
    assert resumed.migrated == [broken.schema_name] and resumed.failures == []
    assert schema_migrations(broken.schema_name) == schema_migrations("_template")


def test_a_schema_whose_tables_are_busy_fails_after_the_lock_timeout(live_db: LiveDb) -> None:
    organization = live_db.organization(slug="roll-busy")
    _put_behind(organization)
    # Another session writing to the table (an open transaction holding ROW EXCLUSIVE).
    with psycopg.connect(_dsn(), autocommit=False) as other:
        other.execute(f'LOCK TABLE "{organization.schema_name}".jobs_job IN ROW EXCLUSIVE MODE')
        summary = organizations_migrate(lock_timeout_ms=200)
    assert [f.schema for f in summary.failures] == [organization.schema_name]
    assert "lock timeout" in summary.failures[0].error
    assert organizations_migrate().migrated == [organization.schema_name]


def test_two_migrates_at_once_apply_each_schema_once(live_db: LiveDb) -> None:
    """A deploy job retried while the first still runs: the second waits for each schema the first
    holds, then finds it current; neither fails on the other's DDL."""
    organization = live_db.organization(slug="roll-twice")
    _put_behind(organization)
    summaries: list[rollout.RolloutSummary] = []

    def migrate() -> None:
        try:
            summaries.append(organizations_migrate())
        finally:
            connection.close()

    # Both start while the organization's row is held, so both have read it as behind.
    with psycopg.connect(_dsn(), autocommit=False) as holder:
        holder.execute("SELECT 1 FROM tenants_organization WHERE id = %s FOR UPDATE", [organization.pk])
        runs = [threading.Thread(target=migrate) for _ in range(2)]
        for run in runs:
            run.start()
        time.sleep(1.0)
    for run in runs:
        run.join(timeout=60)
    assert len(summaries) == 2
    assert [s.failures for s in summaries] == [[], []]
    assert sorted(len(s.migrated) for s in summaries) == [0, 1]
    assert schema_migrations(organization.schema_name) == schema_migrations("_template")


def test_migrate_command_prints_the_pass_and_fails_naming_the_schema(live_db: LiveDb) -> None:
    organization = live_db.organization(slug="roll-command")
    _put_behind(organization)
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE INDEX jobs_job_listed ON "{organization.schema_name}".jobs_job (id)')
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="1 organization schema"):
        call_command("migrate", "--jobs", "1", stdout=out, stderr=err)
    assert f"{organization.schema_name}: " in err.getvalue()
    with connection.cursor() as cursor:
        cursor.execute(f'DROP INDEX "{organization.schema_name}".jobs_job_listed')
    out = StringIO()
    call_command("migrate", stdout=out)
    assert "Organization schemas behind the template: 1 (1 migrated)" in out.getvalue()
    out = StringIO()
    call_command("migrate", "--verify", stdout=out)  # reads every schema: all current
    line = next(line for line in out.getvalue().splitlines() if line.startswith("Organization schemas read"))
    assert "current" in line and "migrated" not in line and "failed" not in line


def test_provisioning_reads_no_catalog(live_db: LiveDb) -> None:
    live_db.organization(slug="roll-warm")  # the script is loaded once per process
    with CaptureQueriesContext(connection) as queries:
        organization = live_db.organization(slug="roll-fresh")
    catalog_reads = [q["sql"] for q in queries.captured_queries if "pg_class" in q["sql"] or "pg_index" in q["sql"]]
    assert catalog_reads == []
    assert organization.migration_state == migration_fingerprint(schema_migrations("_template"))


def _dsn() -> str:
    database = settings.DATABASES["default"]
    parts = {"dbname": "NAME", "user": "USER", "password": "PASSWORD", "host": "HOST", "port": "PORT"}
    return psycopg.conninfo.make_conninfo(
        **{part: str(database[key]) for part, key in parts.items() if database.get(key)}
    )
