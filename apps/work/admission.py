"""Fair admission in the database: an organization has at most `cap` admitted and unfinished rows
of one kind; the oldest waiting ones fill what is free."""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from apps.tenants.connection import server_binding_cursor

# Admitted and unfinished rows are counted up to the cap only, so the count costs no more than the
# cap however long the backlog; the oldest waiting rows are picked and admitted in the same statement.
_ADMIT = """
    WITH active AS (
        SELECT count(*) AS n FROM (
            SELECT 1 FROM {table}
             WHERE admitted_at IS NOT NULL AND (status = 'queued' OR status = 'running')
             LIMIT %(cap)s
        ) counted
    ), picked AS (
        SELECT id FROM {table}
         WHERE status = 'queued' AND admitted_at IS NULL
         ORDER BY created_at
         LIMIT GREATEST(%(cap)s - (SELECT n FROM active), 0)
           FOR UPDATE SKIP LOCKED
    )
    UPDATE {table} SET admitted_at = %(now)s FROM picked WHERE {table}.id = picked.id
    RETURNING {table}.id
"""


# Asked at the end of every row of a kind with a cap: a plain statement (no ORM query to build), prepared.
_WAITING = "SELECT EXISTS (SELECT 1 FROM {table} WHERE status = 'queued' AND admitted_at IS NULL)"


def waiting_exists(*, table: str) -> bool:
    """Whether a row of `table` (in the current organization's schema) waits for admission."""
    with server_binding_cursor() as cursor:
        cursor.execute(_WAITING.format(table=connection.ops.quote_name(table)))
        return bool(cursor.fetchone()[0])


def waiting_admit(*, table: str, cap: int) -> list[Any]:
    """Admit waiting rows of `table` (a registered kind's, in the current organization's schema) up
    to `cap` in flight. A per-organization advisory lock, taken in its own statement so that the
    count's snapshot sees every admission committed before it, makes the count exact; it is held
    until the caller's transaction ends."""
    with transaction.atomic(savepoint=False), server_binding_cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s::text || current_schema()))", [f"admit:{table}:"])
        cursor.execute(_ADMIT.format(table=connection.ops.quote_name(table)), {"cap": cap, "now": timezone.now()})
        return [row[0] for row in cursor.fetchall()]
