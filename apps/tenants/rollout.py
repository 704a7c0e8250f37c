"""The pass of `migrate` over the organizations: each schema brought to the template's migrations.

django-tenants runs Django's whole migrate command once per schema, with a new connection each
time: 241 s at 1,000 organizations with nothing to apply. Here:

- Which schemas are behind is one query: every organization records the fingerprint of the
  migrations its schema holds (`Organization.migration_state`), written in the transaction that
  migrates it (and by provisioning). `verify=True` reads every schema's `django_migrations` instead,
  for a database someone migrated by other means.
- A schema is migrated in one transaction that also records its new state: interrupted, nothing is
  half-applied and the next run resumes with the schemas still behind. A failure is reported by
  schema name and never stops the others.
- Schemas go to a bounded pool of processes, in chunks. Within a process the SQL of a migration
  plan is rendered once (Django's `collect_sql`, as `sqlmigrate` does) and replayed in every schema
  with the same starting point: the schemas are clones of one template, so names agree. Plans with
  operations that don't reduce to SQL (RunPython) or that must run outside a transaction run
  through Django's executor, schema by schema.
- Every transaction waits at most `lock_timeout` for a table lock, so a long query in one
  organization makes that schema fail (rerun it) instead of queueing its traffic behind the
  migration's lock.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from django.db import connection, transaction
from django.db.migrations.migration import Migration
from django_tenants.utils import get_public_schema_name, schema_context

from apps.tenants.connection import connections_close_before_fork
from apps.tenants.migrating import RoutedMigrationExecutor, migration_touches_schema
from apps.tenants.models import Organization
from apps.tenants.template import (
    migration_fingerprint,
    schema_migrations,
    template_ensure_current,
    template_schema_name,
)

# Schemas per task sent to a process: small enough for even work and frequent progress.
CHUNK_SIZE = 20
DEFAULT_LOCK_TIMEOUT_MS = 5_000

Status = Literal["migrated", "current", "failed", "skipped"]


@dataclass(frozen=True)
class SchemaOutcome:
    schema: str
    status: Status
    applied: int = 0
    error: str = ""


@dataclass
class RolloutSummary:
    target: str
    considered: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"migrated": 0, "current": 0, "failed": 0, "skipped": 0})
    failures: list[SchemaOutcome] = field(default_factory=list)
    migrated: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def add(self, outcomes: Iterable[SchemaOutcome]) -> None:
        for outcome in outcomes:
            self.counts[outcome.status] += 1
            if outcome.status == "migrated":
                self.migrated.append(outcome.schema)
            if outcome.status == "failed":
                self.failures.append(outcome)


class SchemaAhead(RuntimeError):
    """The schema holds migrations the template doesn't: newer code migrated it, or the template
    was rolled back. Never "fixed" by this pass."""


# Per process: the code's migrations in dependency order, and rendered SQL per starting point.
_graph_order: list[tuple[str, str]] = []
_migrations: dict[tuple[str, str], Migration] = {}
_rendered: dict[tuple[frozenset[str], frozenset[str]], list[str] | None] = {}


def _graph_load() -> None:
    if _graph_order:
        return
    executor = RoutedMigrationExecutor(connection)
    graph = executor.loader.graph
    for migration, _ in executor.migration_plan(graph.leaf_nodes(), clean_start=True):
        _graph_order.append((migration.app_label, migration.name))
        _migrations[(migration.app_label, migration.name)] = migration


def _plan(missing: set[str]) -> list[Migration]:
    plan = [_migrations[key] for key in _graph_order if f"{key[0]}.{key[1]}" in missing]
    unknown = missing - {f"{m.app_label}.{m.name}" for m in plan}
    if unknown:
        raise RuntimeError(f"the template holds migrations this code doesn't know: {', '.join(sorted(unknown))}")
    return plan


def _renders_to_sql(plan: list[Migration]) -> bool:
    return all(
        not migration.replaces and all(op.reduces_to_sql for op in migration.operations)
        for migration in plan
        if migration_touches_schema(migration, connection.alias)
    )


def _render(plan: list[Migration]) -> list[str]:
    """The SQL `plan` runs in the current schema, rendered without running it."""
    executor = RoutedMigrationExecutor(connection)
    statements: list[str] = []
    for migration in plan:
        if migration_touches_schema(migration, connection.alias):
            # One migration at a time: collect_sql starts from the state at the plan's first node,
            # which holds only that migration's ancestors.
            statements.extend(executor.loader.collect_sql([(migration, False)]))  # type: ignore[attr-defined]
    return statements


def _record(plan: list[Migration]) -> None:
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO django_migrations (app, name, applied) VALUES (%s, %s, now())",
            [(migration.app_label, migration.name) for migration in plan],
        )


class _OutsideTransaction(Exception):
    """The plan holds a migration that must run outside a transaction (atomic = False)."""


def _migrate_schema(
    *, organization_id: int, schema: str, target: frozenset[str], fingerprint: str, lock_timeout_ms: int
) -> SchemaOutcome:
    with schema_context(schema):
        try:
            return _migrate_in_one_transaction(
                organization_id=organization_id,
                schema=schema,
                target=target,
                fingerprint=fingerprint,
                lock_timeout_ms=lock_timeout_ms,
            )
        except _OutsideTransaction as outside:
            plan: list[Migration] = outside.args[0]
        # Django's executor: each atomic migration in a transaction of its own, the others in none.
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, false)", [f"{lock_timeout_ms}ms"])
        try:
            executor = RoutedMigrationExecutor(connection)
            executor.migrate([(m.app_label, m.name) for m in plan], plan=[(m, False) for m in plan])
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
        Organization.objects.filter(pk=organization_id).update(migration_state=fingerprint)
        return SchemaOutcome(schema, "migrated", applied=len(plan))


def _migrate_in_one_transaction(
    *, organization_id: int, schema: str, target: frozenset[str], fingerprint: str, lock_timeout_ms: int
) -> SchemaOutcome:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema])
        if cursor.fetchone() is None:
            return SchemaOutcome(schema, "skipped", error="no such schema (deleted?)")
        # Another migrate at work on this schema (a retried deploy job) is waited for, then this one
        # reads what that one applied: without the row lock both would run the same DDL.
        Organization.objects.select_for_update().filter(pk=organization_id).values_list("id").first()
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{lock_timeout_ms}ms"])
        applied = set(schema_migrations(schema))
        ahead = applied - target
        if ahead:
            raise SchemaAhead(f"holds {len(ahead)} migration(s) the template lacks: {', '.join(sorted(ahead)[:3])}")
        plan = _plan(set(target - applied))
        if plan:
            if any(not m.atomic for m in plan if migration_touches_schema(m, connection.alias)):
                raise _OutsideTransaction(plan)
            key = (frozenset(applied), target)
            if key not in _rendered:
                _rendered[key] = _render(plan) if _renders_to_sql(plan) else None
            statements = _rendered[key]
            if statements is None:
                executor = RoutedMigrationExecutor(connection)
                executor.migrate([(m.app_label, m.name) for m in plan], plan=[(m, False) for m in plan])
            else:
                if statements:
                    cursor.execute("\n".join(statements))
                _record(plan)
        Organization.objects.filter(pk=organization_id).update(migration_state=fingerprint)
    return SchemaOutcome(schema, "migrated" if plan else "current", applied=len(plan))


def _migrate_chunk(
    chunk: list[tuple[int, str]], *, target: frozenset[str], fingerprint: str, lock_timeout_ms: int
) -> list[SchemaOutcome]:
    outcomes = []
    for organization_id, schema in chunk:
        try:
            outcome = _migrate_schema(
                organization_id=organization_id,
                schema=schema,
                target=target,
                fingerprint=fingerprint,
                lock_timeout_ms=lock_timeout_ms,
            )
        except Exception as exc:  # noqa: BLE001 - reported by schema name; the others go on
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            outcome = SchemaOutcome(schema, "failed", error=f"{type(exc).__name__}: {message}"[:500])
        outcomes.append(outcome)
    return outcomes


def organizations_migrate(
    *,
    jobs: int = 1,
    verify: bool = False,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    progress: Callable[[RolloutSummary], None] | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> RolloutSummary:
    """Bring every organization's schema to the template's migrations (the template first: see
    apps.tenants.template). Returns what happened, failures by schema name."""
    started = time.perf_counter()
    template_ensure_current()
    with schema_context(get_public_schema_name()):
        target = frozenset(schema_migrations(template_schema_name()))
        fingerprint = migration_fingerprint(target)
        organizations = Organization.objects.exclude(schema_name=get_public_schema_name())
        if not verify:
            organizations = organizations.exclude(migration_state=fingerprint)
        pending = list(organizations.order_by("id").values_list("id", "schema_name"))
        summary = RolloutSummary(target=fingerprint, considered=len(pending))
        if not pending:
            summary.seconds = time.perf_counter() - started
            return summary
        _graph_load()
        chunks = [pending[i : i + chunk_size] for i in range(0, len(pending), chunk_size)]
        work = partial(_migrate_chunk, target=target, fingerprint=fingerprint, lock_timeout_ms=lock_timeout_ms)
        processes = max(1, min(jobs, len(chunks)))
        if processes == 1:
            results: Iterable[list[SchemaOutcome]] = map(work, chunks)
            for outcomes in results:
                summary.add(outcomes)
                if progress:
                    progress(summary)
        else:
            connections_close_before_fork()
            with multiprocessing.get_context("fork").Pool(processes) as pool:
                for outcomes in pool.imap_unordered(work, chunks):
                    summary.add(outcomes)
                    if progress:
                        progress(summary)
    summary.seconds = time.perf_counter() - started
    return summary


def migration_state_forget(*, schemas: list[str] | None = None) -> int:
    """Mark organizations' recorded state unknown (all, or those of `schemas`), so the next pass
    reads their schemas: after migrating them by other means (a single schema, a target)."""
    organizations = Organization.objects.exclude(schema_name=get_public_schema_name())
    if schemas is not None:
        organizations = organizations.filter(schema_name__in=schemas)
    return organizations.update(migration_state="")
