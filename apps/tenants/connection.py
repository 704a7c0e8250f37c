"""Typed access to django-tenants' connection API (the engine adds it; Django's stubs don't know it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, cast

from django.db import connection, connections
from django_tenants.utils import schema_context

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
