"""The template schema that new organizations are cloned from.

It is migrated whenever the tenants are (our `migrate_schemas` does both) and checked against the
code's migrations before every clone: a tenant cloned from a stale template would get the missing
migrations recorded as applied without their tables.
"""

from __future__ import annotations

import threading

from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django_tenants.utils import schema_context
from psycopg import sql


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
