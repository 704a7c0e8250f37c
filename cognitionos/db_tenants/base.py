"""The database engine: django-tenants' (which selects an organization's schema with `SET search_path`
on the connection), remembering on each pooled connection the path it was left with.

django-tenants forgets the path whenever Django gives the connection back to the pool, so every
request and task that takes one sends `SET search_path` again before its first query on the
organization's schema, though the session on the other end very often still has that very path.
Here the path is remembered on the pooled connection itself, and only when it was set outside any
transaction: then no rollback can revert it, and nothing else in this code base changes a session's
path (a transaction-local `set_config` reverts by itself). A connection whose last path is unknown
(set inside a transaction, or a `SET` that failed) is sent the `SET` as before."""

from __future__ import annotations

from typing import Any

from django_tenants.postgresql_backend import base  # type: ignore[import-untyped]
from django_tenants.utils import get_limit_set_calls  # type: ignore[attr-defined]
from psycopg.pq import TransactionStatus

# The attribute on the psycopg connection (one PostgreSQL session): the search path it has, as a list.
_SEARCH_PATH = "_cognitionos_search_path"


class DatabaseWrapper(base.DatabaseWrapper):
    # django-tenants' state, which its engine declares without types.
    search_path_set_schemas: list[str] | None
    _setting_search_path: bool
    schema_name: str

    def _handle_search_path(self, cursor: Any = None) -> None:
        if self._setting_search_path or self.connection is None or not self.schema_name:
            super()._handle_search_path(cursor)
            return
        if get_limit_set_calls() and self.search_path_set_schemas:
            return
        session = self.connection
        wanted = self._get_cursor_search_paths()
        if getattr(session, _SEARCH_PATH, None) == wanted:
            self.search_path_set_schemas = wanted
            return
        setattr(session, _SEARCH_PATH, None)  # unknown until the SET below is known to hold
        super()._handle_search_path(cursor)
        if self.search_path_set_schemas is not None and session.info.transaction_status == TransactionStatus.IDLE:
            setattr(session, _SEARCH_PATH, list(self.search_path_set_schemas))
