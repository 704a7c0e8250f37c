"""A stand-in API key resolver for the tenant middleware's hook (the real one comes with API keys)."""

from apps.tenants.models import Organization

KEYS = {"test-key-tenant-a": "tenant-a", "test-key-tenant-b": "tenant-b"}


def resolve_by_test_key(raw_key: str) -> Organization | None:
    slug = KEYS.get(raw_key)
    return Organization.objects.filter(slug=slug).first() if slug else None
