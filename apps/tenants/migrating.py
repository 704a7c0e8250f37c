"""Django's `migrate`, which applies a migration the router keeps out of the schema being migrated
as a change of state only, without rendering models for it.

django-tenants runs Django's migrate once per schema (public, the template, each organization) and
records every app's migrations in each; the router lets only shared apps touch the public schema
and only tenant apps touch the others, so in each schema the other kind's migrations do nothing in
the database. Django still applies them on its rendered model state, re-rendering every related
model for each operation: dj-stripe's 0002 alone (514 RemoveFields over models that all point at
each other) cost about 300 of the 760 CPU seconds a fresh test database took (profiled), once
in public, where it has work to do, and once more in the template, where it has none.

Here such a migration mutates the unrendered state (plain dictionaries); the state is rendered
again, once, before the next migration that does run in the database. What is recorded as applied
is unchanged. Used for every schema through django-tenants' TENANT_BASE_MIGRATE_COMMAND.

Where dj-stripe's 0002 does run (public), it still cost 47 of the 55 seconds a fresh test database
took: each of its 514 RemoveFields re-renders the models around it. A run of RemoveFields is
applied here against the state as it was before the run (dropping a column needs only the table
and the field, which that state still has), and the models are reloaded once after the run.
"""

from __future__ import annotations

from functools import partial
from typing import Any
from unittest import mock

from django.core.management.commands import migrate as django_migrate
from django.db import router
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.migration import Migration
from django.db.migrations.operations import RemoveField
from django.db.migrations.state import ProjectState


def migration_touches_schema(migration: Migration, alias: str) -> bool:
    """Whether the router lets this migration's app into the schema the connection is on.

    Every operation Django runs checks the router with the migration's app label (model operations
    with the model's, which is the same app) before it writes anything; a refused app writes
    nothing, whatever its operations are."""
    return router.allow_migrate(alias, migration.app_label) is not False


def migration_apply_removals_batched(
    migration: Migration,
    project_state: ProjectState,
    schema_editor: BaseDatabaseSchemaEditor,
    collect_sql: bool = False,
) -> ProjectState:
    """`Migration.apply`, with each run of RemoveFields applied against the state as it was before
    the run, whose models are then reloaded once for the whole run (Django reloads them, and every
    model related to them, after each removal). PostgreSQL only (`sqlmigrate`'s collect_sql keeps
    Django's own): SQLite rebuilds a table from the model on each removal, so it needs the state
    after each one."""
    if collect_sql or schema_editor.connection.vendor != "postgresql" or not schema_editor.atomic_migration:
        return type(migration).apply(migration, project_state, schema_editor, collect_sql)
    before_run: ProjectState | None = None
    removed_from: list[tuple[str, str]] = []
    for operation in [*migration.operations, None]:
        if not isinstance(operation, RemoveField) and removed_from:
            # Found from the rendered models, which still have the removed fields: every model
            # the removals touch, as each removal's own reload would have found them.
            project_state.reload_models(removed_from, delay=False)
            before_run, removed_from = None, []
        if operation is None:
            break
        if not isinstance(operation, RemoveField):
            old_state = project_state.clone()
            operation.state_forwards(migration.app_label, project_state)
            operation.database_forwards(migration.app_label, schema_editor, old_state, project_state)
            continue
        if before_run is None:
            before_run = project_state.clone()
        rendered = project_state.__dict__.pop("apps", None)
        operation.state_forwards(migration.app_label, project_state)  # on the model states only
        if rendered is not None:
            project_state.__dict__["apps"] = rendered
        removed_from.append((migration.app_label, operation.model_name_lower))
        operation.database_forwards(migration.app_label, schema_editor, before_run, project_state)
    return project_state


class RoutedMigrationExecutor(MigrationExecutor):
    def _migrate_all_forwards(
        self, state: ProjectState, plan: list[tuple[Migration, bool]], full_plan: Any, fake: bool, fake_initial: bool
    ) -> ProjectState:
        migrations_to_run = {migration for migration, _ in plan}
        for migration, _ in full_plan:
            if not migrations_to_run:
                break
            if migration not in migrations_to_run:
                continue
            if migration_touches_schema(migration, self.connection.alias):
                if "apps" not in state.__dict__:
                    state.apps  # noqa: B018 - render once, as Django does before a migration runs
                with mock.patch.object(migration, "apply", partial(migration_apply_removals_batched, migration)):
                    state = self.apply_migration(state, migration, fake=fake, fake_initial=fake_initial)
            else:
                # Drop the rendered models: on plain state each operation is a dictionary update.
                state.__dict__.pop("apps", None)
                if self.progress_callback:
                    self.progress_callback("apply_start", migration, fake)
                migration.mutate_state(state, preserve=False)
                self.record_migration(migration)
                if self.progress_callback:
                    self.progress_callback("apply_success", migration, fake)
            migrations_to_run.remove(migration)
        return state


class Command(django_migrate.Command):
    """Django's migrate command with RoutedMigrationExecutor (django-tenants calls it per schema)."""

    def handle(self, *args: Any, **options: Any) -> None:
        # The command builds its executor from this module-level name; patch.object fails loudly
        # if a Django upgrade renames it.
        with mock.patch.object(django_migrate, "MigrationExecutor", RoutedMigrationExecutor):
            super().handle(*args, **options)
