"""The template schema that new organizations are cloned from, and its rendered script.

It is migrated before the organizations are (our `migrate_schemas` does both) and checked against
the code's migrations before a creation: a tenant cloned from a stale template would get the
missing migrations recorded as applied without their tables. Its definition is rendered into a
`SchemaScript` once per migration state (the fingerprint of the migrations it holds); creations run
that script. Migrating the template holds TEMPLATE_LOCK exclusively and a creation holds it shared,
so no organization is cloned from a half-migrated template, and every organization created before
a migration of the template is visible to the pass over the organizations that follows it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from django.conf import settings
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.migrations.loader import MigrationLoader
from django_tenants.utils import schema_context
from psycopg import sql

from apps.tenants.cloning import schema_script_render
from apps.tenants.models import SchemaScript

# pg_advisory_lock key (any fixed bigint): "tmpl" in ASCII.
TEMPLATE_LOCK = 0x746D706C
# Scripts of older migration states kept (a process still running older code may ask for one).
SCRIPTS_KEPT = 5


class TemplateOutdated(RuntimeError):
    pass


_verified_current = threading.Event()


def template_schema_name() -> str:
    return str(settings.TENANT_TEMPLATE_SCHEMA)


def template_migrate(*, verbosity: int = 0) -> None:
    """Create the template schema if missing and apply every tenant migration to it."""
    from django_tenants.management.commands.migrate_schemas import MigrateSchemasCommand

    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(template_schema_name())).as_string()
        )
    # django-tenants' own command (not ours, which would recurse), in process: the subprocess
    # executor is for the command line only.
    # On a connection of its own, outside the pool: django-tenants closes the default one after
    # migrating a schema (which would hand a session lock taken there back to the pool, held).
    lock_holder = psycopg.connect(**connection.get_connection_params(), autocommit=True)
    try:
        lock_holder.execute("SELECT pg_advisory_lock(%s)", [TEMPLATE_LOCK])
        call_command(
            MigrateSchemasCommand(),
            tenant=True,
            schema_name=template_schema_name(),
            interactive=False,
            verbosity=verbosity,
            executor="standard",
            skip_checks=True,
        )
        _verified_current.clear()
        # Rendered here, so the first creation after a deploy doesn't pay for it.
        current = template_script()
        stale = SchemaScript.objects.order_by("-created_at", "-id").values_list("id", flat=True)[SCRIPTS_KEPT:]
        SchemaScript.objects.filter(id__in=list(stale)).exclude(fingerprint=current.fingerprint).delete()
    finally:
        lock_holder.close()  # ends its session, and the lock with it


def migration_fingerprint(names: Iterable[str]) -> str:
    """One value for a set of applied migrations ("app.name"), whatever their order."""
    return hashlib.sha256("\n".join(sorted(set(names))).encode()).hexdigest()


def schema_migrations(schema: str) -> list[str]:
    """The migrations recorded in `schema`, as sorted "app.name" strings."""
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("SELECT app || '.' || name FROM {}.django_migrations ORDER BY 1")
            .format(sql.Identifier(schema))
            .as_string()
        )
        return [row[0] for row in cursor.fetchall()]


@dataclass(frozen=True)
class TemplateScript:
    fingerprint: str
    migrations: frozenset[str]
    statements: list[str]


_scripts: dict[str, TemplateScript] = {}


def template_script() -> TemplateScript:
    """The script of the template as it is now: from this process's memory, else the stored one,
    else rendered from the catalogs and stored (once per migration state, whoever comes first)."""
    names = schema_migrations(template_schema_name())
    fingerprint = migration_fingerprint(names)
    script = _scripts.get(fingerprint)
    if script is not None:
        return script
    stored = SchemaScript.objects.filter(fingerprint=fingerprint).first()
    if stored is None:
        with transaction.atomic(), connection.cursor() as cursor:
            statements = schema_script_render(cursor=cursor, source=template_schema_name())
        try:
            with transaction.atomic():
                stored = SchemaScript.objects.create(fingerprint=fingerprint, migrations=names, statements=statements)
        except IntegrityError:  # rendered by another process meanwhile: the same statements
            stored = SchemaScript.objects.get(fingerprint=fingerprint)
    script = TemplateScript(fingerprint, frozenset(stored.migrations), list(stored.statements))
    _scripts[fingerprint] = script
    return script


def _missing_migrations() -> set[tuple[str, str]]:
    expected = set(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("SELECT app, name FROM {}.django_migrations")
            .format(sql.Identifier(template_schema_name()))
            .as_string()
        )
        applied = {(app, name) for app, name in cursor.fetchall()}
    return expected - applied


def template_ensure_current() -> None:
    """Raise TemplateOutdated unless the template has every migration this code knows.

    Checked once per process: the code's migrations cannot change while it runs, and the template
    only ever moves forward.
    """
    if _verified_current.is_set():
        return
    with schema_context("public"), connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [template_schema_name()])
        exists = cursor.fetchone() is not None
    if not exists:
        raise TemplateOutdated(
            f"the tenant template schema {template_schema_name()!r} does not exist: run `cognitionos migrate`"
        )
    missing = _missing_migrations()
    if missing:
        names = ", ".join(f"{app}.{name}" for app, name in sorted(missing)[:5])
        raise TemplateOutdated(
            f"the tenant template schema lacks {len(missing)} migration(s) ({names}): run `cognitionos migrate`"
        )
    _verified_current.set()
