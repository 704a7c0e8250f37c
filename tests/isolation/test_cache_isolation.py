from __future__ import annotations

from django.core.cache import cache
from django_tenants.utils import schema_context

from apps.tenants.models import Organization


def test_django_cache_entries_are_per_organization(two_tenants: tuple[Organization, Organization]) -> None:
    tenant_a, tenant_b = two_tenants
    with schema_context(tenant_a.schema_name):
        cache.set("greeting", "hello from A", 30)
    with schema_context(tenant_b.schema_name):
        assert cache.get("greeting") is None
        cache.set("greeting", "hello from B", 30)
    with schema_context(tenant_a.schema_name):
        assert cache.get("greeting") == "hello from A"
        cache.delete("greeting")
    with schema_context(tenant_b.schema_name):
        assert cache.get("greeting") == "hello from B"
        cache.delete("greeting")
