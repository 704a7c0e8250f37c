"""apps.tenants.migrating: in each schema, the migrations of apps the router keeps out of it change
the model state only; the others run in the database as Django runs them, a run of RemoveFields
against one rendering of the state."""

from __future__ import annotations

from unittest import mock

from django.db import connection, migrations, models
from django.db.migrations.state import ProjectState
from django_tenants.utils import get_tenant_base_migrate_command_class

from apps.tenants.connection import tenant_connection
from apps.tenants.migrating import Command, RoutedMigrationExecutor
from apps.tenants.models import Organization


def _migration(app_label: str, table: str) -> migrations.Migration:
    class Probe(migrations.Migration):
        operations = [
            migrations.RunSQL(f"CREATE TABLE {table} (id integer)"),
            migrations.CreateModel("SuiteProbe", fields=[("id", models.AutoField(primary_key=True))]),
        ]

    return Probe("9999_suite_probe", app_label)


def _apply(migration: migrations.Migration, state: ProjectState | None = None) -> ProjectState:
    executor = RoutedMigrationExecutor(connection)
    state = state or ProjectState(real_apps=set())
    state.apps  # noqa: B018 - rendered, as Django's executor has it when it applies a migration
    plan = [(migration, False)]
    return executor._migrate_all_forwards(state, plan, plan, fake=False, fake_initial=False)


def _table_exists(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{tenant_connection().schema_name}.{table}"])
        return bool(cursor.fetchone()[0])


def _recorded(migration: migrations.Migration) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM django_migrations WHERE app = %s AND name = %s", [migration.app_label, migration.name]
        )
        return cursor.fetchone() is not None


def test_django_tenants_migrates_every_schema_with_this_command() -> None:
    assert get_tenant_base_migrate_command_class() is Command


def test_in_an_organization_schema_a_shared_app_migration_changes_state_only(tenant: Organization) -> None:
    shared = _migration("djstripe", "suite_probe_shared")
    state = _apply(shared)
    assert ("djstripe", "suiteprobe") in state.models
    assert not _table_exists("suite_probe_shared")
    assert _recorded(shared)

    own = _migration("jobs", "suite_probe_tenant")
    state = _apply(own)
    assert ("jobs", "suiteprobe") in state.models
    assert _table_exists("suite_probe_tenant")
    assert _recorded(own)


def test_in_the_public_schema_a_tenant_app_migration_changes_state_only(db: None) -> None:
    tenant_connection().set_schema_to_public()
    own = _migration("jobs", "suite_probe_tenant")
    state = _apply(own)
    assert ("jobs", "suiteprobe") in state.models
    assert not _table_exists("suite_probe_tenant")
    assert _recorded(own)

    shared = _migration("billing", "suite_probe_shared")
    state = _apply(shared)
    assert ("billing", "suiteprobe") in state.models
    assert _table_exists("suite_probe_shared")
    assert _recorded(shared)


def _columns(table: str) -> set[str]:
    with connection.cursor() as cursor:
        return {column.name for column in connection.introspection.get_table_description(cursor, table)}


def test_a_run_of_removed_fields_drops_each_column_and_renders_the_state_once(tenant: Organization) -> None:
    class Create(migrations.Migration):
        operations = [
            migrations.CreateModel("SuiteParent", fields=[("id", models.AutoField(primary_key=True))]),
            migrations.CreateModel(
                "SuiteProbe",
                fields=[
                    ("id", models.AutoField(primary_key=True)),
                    ("note", models.CharField(max_length=10, unique=True)),
                    ("parent", models.ForeignKey("jobs.SuiteParent", on_delete=models.CASCADE)),
                    ("tags", models.ManyToManyField("jobs.SuiteParent", related_name="+")),
                ],
            ),
        ]

    class Remove(migrations.Migration):
        operations = [
            migrations.RemoveField("SuiteProbe", "note"),
            migrations.RemoveField("SuiteProbe", "parent"),
            migrations.RemoveField("SuiteProbe", "tags"),
            migrations.AddField("SuiteProbe", "kept", models.IntegerField(default=0)),
        ]

    state = _apply(Create("9998_suite_create", "jobs"))
    assert _columns("jobs_suiteprobe") == {"id", "note", "parent_id"}
    assert _table_exists("jobs_suiteprobe_tags")

    with mock.patch.object(ProjectState, "_reload", autospec=True, side_effect=ProjectState._reload) as reloads:  # type: ignore[attr-defined]
        state = _apply(Remove("9999_suite_remove", "jobs"), state)

    assert _columns("jobs_suiteprobe") == {"id", "kept"}
    assert not _table_exists("jobs_suiteprobe_tags")
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "jobs_suiteprobe")
    assert [name for name, c in constraints.items() if c["foreign_key"] or (c["unique"] and not c["primary_key"])] == []
    assert set(state.models["jobs", "suiteprobe"].fields) == {"id", "kept"}
    assert state.apps.get_model("jobs", "SuiteProbe")._meta.get_field("kept")
    # Django reloads the models around each removed field (4 reloads in all); here the run of
    # removals reloads once, and the AddField once.
    assert reloads.call_count == 2
