"""Copy a migrated schema's structure and rows into a new schema, inside the caller's transaction.

django-tenants' `clone_schema` rewrites `vector(1536)` columns as plain `vector` and then aborts on
HNSW indexes over them. This clone copies each table with `CREATE TABLE ... (LIKE ... INCLUDING
ALL)`, which keeps exact column types (pgvector dimensions included), defaults, identity columns and
check constraints; then it copies rows (the template's `django_migrations` above all) and
recreates every index (HNSW included) and constraint under its original name, then foreign keys and
triggers, which LIKE leaves out.

Object kinds a tenant migration could add but this clone does not copy (views, functions, free
sequences, ...) raise `UnsupportedSchemaObject`, so a migration that needs one fails in the test
suite rather than producing tenants without it.
"""

from __future__ import annotations

import re

from django.db import connection
from django.db.backends.utils import CursorWrapper
from psycopg import sql


class UnsupportedSchemaObject(RuntimeError):
    pass


def _tables(cursor: CursorWrapper, schema: str) -> list[str]:
    cursor.execute(
        """
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
        ORDER BY c.relname
        """,
        [schema],
    )
    return [row[0] for row in cursor.fetchall()]


def _refuse_unsupported(cursor: CursorWrapper, schema: str) -> None:
    cursor.execute(
        """
        SELECT 'relation ' || c.relname || ' of kind ' || c.relkind::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s AND c.relkind IN ('v', 'm', 'f', 'c')
        UNION ALL
        SELECT 'sequence ' || c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s AND c.relkind = 'S'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('i', 'a'))
        UNION ALL
        SELECT 'function ' || p.proname
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %(schema)s
        UNION ALL
        SELECT 'type ' || t.typname
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = %(schema)s AND t.typtype IN ('e', 'd', 'r')
        """,
        {"schema": schema},
    )
    unsupported = [row[0] for row in cursor.fetchall()]
    if unsupported:
        raise UnsupportedSchemaObject(
            f"schema {schema!r} holds objects the tenant clone does not copy: {', '.join(unsupported)}"
        )


def _definitions_as_seen_from(cursor: CursorWrapper, schema: str, query: str) -> list[tuple[str, str]]:
    """Run a catalog query with only `schema` (and pg_catalog) on the search path.

    pg_get_constraintdef and pg_get_triggerdef qualify names that are not on the search path, so
    seen from the source schema its own tables come out unqualified; replayed with the target
    schema first on the path they then name the target's tables. Objects elsewhere (the vector
    type, trigger functions in public) come out qualified and keep pointing where they did.
    """
    cursor.execute("SELECT set_config('search_path', %s, true)", [sql.Identifier(schema).as_string()])
    cursor.execute(query, [schema])
    return [(row[0], row[1]) for row in cursor.fetchall()]


def _retarget(definition: str, *, source: str, target: str) -> str:
    """pg_get_indexdef and pg_get_triggerdef always qualify the table: point them at the target."""
    quoted_source, quoted_target = _quote(source), _quote(target)
    needle = f" ON {quoted_source}."
    if definition.count(needle) != 1:
        raise UnsupportedSchemaObject(f"cannot retarget definition to {target!r}: {definition}")
    return definition.replace(needle, f" ON {quoted_target}.")


def _quote(name: str) -> str:
    """Quote an identifier the way PostgreSQL prints it: only when it must."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def schema_clone(*, cursor: CursorWrapper, source: str, target: str) -> None:
    """Create `target` as a copy of `source`. Runs in the caller's transaction: all or nothing."""
    if not connection.in_atomic_block:
        raise RuntimeError("schema_clone must run inside a transaction")
    cursor.execute("SELECT current_setting('search_path')")
    original_search_path = cursor.fetchone()[0]
    _refuse_unsupported(cursor, source)
    tables = _tables(cursor, source)
    src, dst = sql.Identifier(source), sql.Identifier(target)

    # Index and constraint names must match the source's: later migrations refer to them by name.
    # LIKE would invent new index names, so indexes are recreated from their definitions instead.
    index_backed_constraints = _definitions_as_seen_from(
        cursor,
        source,
        """
        SELECT format('ALTER TABLE %%I ADD CONSTRAINT %%I ', t.relname, con.conname), pg_get_constraintdef(con.oid)
        FROM pg_constraint con
        JOIN pg_class t ON t.oid = con.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = %s AND con.contype IN ('p', 'u', 'x')
        ORDER BY t.relname, con.conname
        """,
    )
    indexes = _definitions_as_seen_from(
        cursor,
        source,
        """
        SELECT '', pg_get_indexdef(i.indexrelid)
        FROM pg_index i
        JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = %s AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid)
        ORDER BY t.relname, i.indexrelid
        """,
    )
    foreign_keys = _definitions_as_seen_from(
        cursor,
        source,
        """
        SELECT format('ALTER TABLE %%I ADD CONSTRAINT %%I ', t.relname, con.conname), pg_get_constraintdef(con.oid)
        FROM pg_constraint con
        JOIN pg_class t ON t.oid = con.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = %s AND con.contype = 'f'
        ORDER BY t.relname, con.conname
        """,
    )
    triggers = _definitions_as_seen_from(
        cursor,
        source,
        """
        SELECT '', pg_get_triggerdef(tg.oid)
        FROM pg_trigger tg
        JOIN pg_class t ON t.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = %s AND NOT tg.tgisinternal
        ORDER BY t.relname, tg.tgname
        """,
    )
    cursor.execute("SELECT set_config('search_path', %s, true)", [f"{dst.as_string()}, public"])

    cursor.execute(sql.SQL("CREATE SCHEMA {}").format(dst).as_string())
    for table in tables:
        # Exact column types (vector(N) included), defaults, identity, NOT NULL and CHECK constraints.
        cursor.execute(
            sql.SQL("CREATE TABLE {}.{} (LIKE {}.{} INCLUDING ALL EXCLUDING INDEXES)")
            .format(dst, sql.Identifier(table), src, sql.Identifier(table))
            .as_string()
        )
    # Rows before indexes and constraints: the template holds its migration history and seed data.
    for table in tables:
        cursor.execute(
            sql.SQL("INSERT INTO {}.{} OVERRIDING SYSTEM VALUE SELECT * FROM {}.{}")
            .format(dst, sql.Identifier(table), src, sql.Identifier(table))
            .as_string()
        )
    cursor.execute(
        """
        SELECT format('SELECT setval(%%L, (SELECT max(%%I) FROM %%I.%%I))',
                      pg_get_serial_sequence(quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.attname),
                      a.attname, n.nspname, c.relname)
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND a.attidentity <> '' AND NOT a.attisdropped
        """,
        [target],
    )
    for (statement,) in cursor.fetchall():
        cursor.execute(statement)  # setval is strict: an empty table keeps its sequence at the start
    for prefix, definition in index_backed_constraints + foreign_keys:
        cursor.execute(prefix + definition)
    for _, definition in indexes + triggers:
        cursor.execute(_retarget(definition, source=source, target=target))
    cursor.execute("SELECT set_config('search_path', %s, true)", [original_search_path])
