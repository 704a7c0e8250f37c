"""tests.support.schema_migrations: a backward migrate unapplies each migration with the state Django
builds for it, though the migrations of apps the router keeps out of the schema were applied to it
without rendering models."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.migrations.migration import Migration
from django.db.migrations.state import ProjectState
from django.db.models import Field

from apps.tenants.migrating import migration_touches_schema
from apps.tenants.models import Organization
from tests.support.schema_migrations import RoutedBackwardsMigrationExecutor, migrate

# Unapplying jobs 0004 takes agents' migrations with it, and dj-stripe's (shared) lie between them.
TARGET = [("jobs", "0003_partial_index_ors")]


def _deconstructed(value: Any) -> Any:
    """A field as what it is made of, the fields inside it too (an ArrayField's base field compares
    by identity and the model it was last rendered into: a state's rendering, not its content)."""
    if isinstance(value, Field):
        _, path, args, kwargs = value.deconstruct()
        return path, _deconstructed(args), _deconstructed(kwargs)
    if isinstance(value, list | tuple):
        return tuple(_deconstructed(item) for item in value)
    if isinstance(value, dict):
        return {key: _deconstructed(item) for key, item in value.items()}
    return value


def _content(state: ProjectState) -> dict[tuple[str, str], Any]:
    return {
        key: (
            {name: _deconstructed(field) for name, field in model.fields.items()},
            model.options,
            model.bases,
            model.managers,
        )
        for key, model in state.models.items()
    }


def test_each_migration_is_unapplied_with_the_state_before_it(tenant: Organization) -> None:
    executor = RoutedBackwardsMigrationExecutor(connection)
    plan = executor.migration_plan(TARGET)
    full_plan = executor.migration_plan(executor.loader.graph.leaf_nodes(), clean_start=True)
    applied = {executor.loader.graph.nodes[key] for key in executor.loader.applied_migrations}
    to_unapply = [migration for migration, _ in plan]
    # The state before each: every applied migration ahead of it in the full plan, on plain state.
    expected: dict[Migration, ProjectState] = {}
    state = ProjectState(real_apps=executor.loader.unmigrated_apps)
    for migration, _ in full_plan:
        if migration in to_unapply:
            expected[migration] = state.clone()
        if migration in applied:
            migration.mutate_state(state, preserve=False)
    order = [migration for migration, _ in full_plan]
    indexes = [order.index(migration) for migration in to_unapply]
    window = order[min(indexes) : max(indexes)]
    skipped = [m for m in window if m in applied and not migration_touches_schema(m, connection.alias)]
    assert skipped, "no migration kept out of the schema among the ones unapplied: nothing to prove"

    unapplied: list[Migration] = []
    unapply_migration = executor.unapply_migration

    def checked(state: ProjectState, migration: Migration, fake: bool = False) -> Any:
        here, there = _content(state), _content(expected[migration])
        assert here == there, (migration, {key for key in {*here, *there} if here.get(key) != there.get(key)})
        assert state.real_apps == expected[migration].real_apps
        unapplied.append(migration)
        return unapply_migration(state, migration, fake=fake)

    executor.unapply_migration = checked  # type: ignore[method-assign]
    executor.migrate(TARGET)
    assert unapplied == to_unapply and len(to_unapply) > 1

    migrate()  # and forward again
    again = RoutedBackwardsMigrationExecutor(connection)
    assert again.migration_plan(again.loader.graph.leaf_nodes()) == []
