"""Typed access to django-tenants' connection API (the engine adds it; Django's stubs don't know it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, cast

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.postgresql.base import ServerBindingCursor  # type: ignore[attr-defined]
from django.db.backends.utils import CursorWrapper
from django_tenants.utils import schema_context

from cognitionos.db_engine.base import exporting_cursor_class

if TYPE_CHECKING:
    from apps.tenants.models import Organization


class TenantConnection(Protocol):
    schema_name: str

    def set_tenant(self, tenant: Organization, include_public: bool = True) -> None: ...

    def set_schema_to_public(self) -> None: ...

    def set_schema(self, schema_name: str, include_public: bool = True) -> None: ...


def tenant_connection() -> TenantConnection:
    """The current thread's default connection, seen through django-tenants' API."""
    return cast("TenantConnection", connection)


@contextmanager
def organization_schema(organization: Organization) -> Iterator[None]:
    """Run on the organization's schema: a no-op when already there (the usual case in a request),
    and a switch-and-restore where the code runs later, like the body of a streamed response."""
    if tenant_connection().schema_name == organization.schema_name:
        yield
        return
    with schema_context(organization.schema_name):
        yield


def connections_close_before_fork() -> None:
    """Close every connection and its pool: a forked process must not share the parent's sockets
    (a pooled connection given back by close() stays open, and a child would take it)."""
    for wrapper in connections.all():
        wrapper.close()
        close_pool = getattr(wrapper, "close_pool", None)  # PostgreSQL with a pool only
        if close_pool is not None and getattr(wrapper, "pool", None) is not None:
            close_pool()


def server_binding_cursor(*, on_search_path: bool = True) -> CursorWrapper:
    """A cursor of the default connection that binds parameters on the server, so that psycopg
    prepares a statement on a connection once it has run there a few times (prepare_threshold):
    PostgreSQL then skips parsing and planning it, most of a short statement's time. For the few
    fixed statements that every job, call or event runs. `on_search_path`: on the current
    organization's schema (django-tenants sets the connection's search path first, if it must; a
    prepared plan is made again when the path differs); without it, for statements that name their
    schema themselves, no `SET search_path` round trip. Statements still go through Django's
    wrappers: query capture in tests, django-prometheus' counts.
    (Behind a transaction-pooling PgBouncer this needs its max_prepared_statements; the in-process
    pool keeps each statement on its connection.)"""
    wrapper = connections[DEFAULT_DB_ALIAS]
    wrapper.close_if_health_check_failed()
    wrapper.ensure_connection()
    if on_search_path:
        wrapper._handle_search_path()  # type: ignore[attr-defined]
    with wrapper.wrap_database_errors:
        cursor = _SERVER_BINDING_CURSOR(wrapper.connection)
    return wrapper._prepare_cursor(cursor)  # type: ignore[attr-defined,no-any-return]


_SERVER_BINDING_CURSOR = exporting_cursor_class(ServerBindingCursor, DEFAULT_DB_ALIAS, "postgresql")
