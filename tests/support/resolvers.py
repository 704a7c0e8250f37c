"""A stand-in API key resolver for the tenant middleware's hook (the real one comes with API keys)."""

from apps.accounts.principals import Principal
from apps.tenants.models import Organization

KEYS = {"test-key-tenant-a": "tenant-a", "test-key-tenant-b": "tenant-b"}


def resolve_by_test_key(raw_key: str, *, client_address: str = "") -> tuple[Organization, Principal] | None:
    organization = Organization.objects.filter(slug=KEYS.get(raw_key, "")).first()
    return (organization, Principal(kind="api_key", id="0", label=raw_key)) if organization else None
