"""Migrating the connection's schema backwards and forwards in a test, over rows the test inserts
with the models of the earlier state (tests/<app>/test_migrations.py).

Django's executor, to unapply migrations, first builds the model state before each of them: it
renders every model of the project once the first migration to unapply comes up in its full plan,
then applies every applied migration after it (of any app) on the rendered state, re-rendering the
related models for each operation. dj-stripe's 0002 (514 RemoveFields over models that all point at
each other) lies in that stretch for the migrations of jobs, agents and knowledge tested here, and
cost 55-100 s per test that unapplies them. dj-stripe is a shared app: the router keeps it out of an
organization's schema.

The executor here applies such migrations in that pass to the unrendered state (plain dictionaries),
as apps.tenants.migrating.RoutedMigrationExecutor does for the forward migrate of every schema (and
does here too); the state is rendered again before the next migration to unapply. The states Django
unapplies with, the database operations and what is recorded are unchanged: rendering only caches
the models of a state, and a migration's changes of state are the same on either.
"""

from __future__ import annotations

from django.apps.registry import Apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.migration import Migration
from django.db.migrations.state import ProjectState

from apps.tenants.migrating import RoutedMigrationExecutor, migration_touches_schema

Targets = list[tuple[str, str]]


class RoutedBackwardsMigrationExecutor(RoutedMigrationExecutor):
    """RoutedMigrationExecutor that also builds the states of a backward migrate without rendering
    models for the migrations the router keeps out of the schema."""

    def _migrate_all_backwards(
        self, plan: list[tuple[Migration, bool]], full_plan: list[tuple[Migration, bool]], fake: bool
    ) -> ProjectState:
        # Django 5.2's MigrationExecutor._migrate_all_backwards, but for the state-only branch.
        migrations_to_run = {migration for migration, _ in plan}
        # The state before each migration to unapply.
        states: dict[Migration, ProjectState] = {}
        state = self._create_project_state()  # type: ignore[attr-defined]  # private in django-stubs
        applied_migrations = {
            self.loader.graph.nodes[key] for key in self.loader.applied_migrations if key in self.loader.graph.nodes
        }
        for migration, _ in full_plan:
            if not migrations_to_run:
                break
            if migration in migrations_to_run:
                if "apps" not in state.__dict__:
                    state.apps  # noqa: B018 - render, as Django does before the first one
                states[migration] = state
                state = migration.mutate_state(state, preserve=True)
                migrations_to_run.remove(migration)
            elif migration in applied_migrations:
                if not migration_touches_schema(migration, self.connection.alias):
                    # Drop the rendered models: on plain state each operation is a dictionary update.
                    state.__dict__.pop("apps", None)
                migration.mutate_state(state, preserve=False)

        for migration, _ in plan:
            self.unapply_migration(states[migration], migration, fake=fake)
            applied_migrations.remove(migration)

        # The state after: the one before the last migration unapplied, with every applied
        # migration after it in the full plan.
        last_unapplied_migration = plan[-1][0]
        state = states[last_unapplied_migration]
        state.__dict__.pop("apps", None)
        for index, (migration, _) in enumerate(full_plan):
            if migration == last_unapplied_migration:
                for later, _ in full_plan[index:]:
                    if later in applied_migrations:
                        later.mutate_state(state, preserve=False)
                break
        return state


def migrate(targets: Targets | None = None) -> MigrationExecutor:
    """Migrate the connection's schema to `targets` (every app's last migration when None),
    backwards or forwards, as `migrate` would; the executor's loader has the graph."""
    executor = RoutedBackwardsMigrationExecutor(connection)
    executor.migrate(targets if targets is not None else executor.loader.graph.leaf_nodes())
    return executor


def models_at(executor: MigrationExecutor, targets: Targets) -> Apps:
    """The models as they were once `targets` were applied (rows inserted with them before a
    migration are the rows it migrates)."""
    return executor.loader.project_state(targets).apps


def constraints_check_now() -> None:
    """Run the checks the inserts deferred (foreign keys), before a migration changes the tables:
    PostgreSQL refuses to alter a table with pending trigger events."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
