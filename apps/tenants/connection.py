"""Typed access to django-tenants' connection API (the engine adds it; Django's stubs don't know it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, cast

from django.db import connection

if TYPE_CHECKING:
    from apps.tenants.models import Organization


class TenantConnection(Protocol):
    schema_name: str

    def set_tenant(self, tenant: Organization, include_public: bool = True) -> None: ...

    def set_schema_to_public(self) -> None: ...


def tenant_connection() -> TenantConnection:
    """The current thread's default connection, seen through django-tenants' API."""
    return cast("TenantConnection", connection)
