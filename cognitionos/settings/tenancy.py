"""django-tenants: schema per organization, the template schema new organizations are cloned from."""

from .env import env_int

TENANT_MODEL = "tenants.Organization"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_NAME = "public"
# Organizations are provisioned by cloning this migrated schema (apps.tenants.template), never by
# replaying migrations. It is not an organization and is never routed to.
TENANT_TEMPLATE_SCHEMA = "_template"
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]
# Hook for the API host: a dotted path to `f(raw_key: str) -> (Organization, Principal) | None` that
# the tenant middleware calls with the bearer token.
TENANT_API_KEY_RESOLVER: str | None = "apps.apikeys.selectors.apikey_resolve"
# How long a process may keep serving a host's organization (and its status) without asking the
# database again: a suspension takes effect everywhere within this many seconds.
TENANT_RESOLUTION_CACHE_SECONDS = env_int("TENANT_RESOLUTION_CACHE_SECONDS", 5)
# Issue `SET search_path` once per connection and tenant, not before every query. Safe with
# django-tenants 4.0.1, which forgets the path on rollback and savepoint rollback; our suite
# proves it (tests/tenants/test_search_path.py).
TENANT_LIMIT_SET_CALLS = True
# Hosts that serve the public schema besides BASE_DOMAIN (for example an API host name).
PUBLIC_HOSTS: list[str] = []
# Slugs that can never name an organization: they are, or may become, hosts of the platform.
RESERVED_SLUGS = frozenset(
    {
        "public",
        "www",
        "api",
        "admin",
        "app",
        "static",
        "media",
        "mail",
        "smtp",
        "docs",
        "status",
        "help",
        "support",
        "billing",
        "auth",
        "login",
        "sso",
        "saml",
        "oauth",
        "template",
        "health",
        "metrics",
        "cdn",
        "assets",
        "portal",
        "dashboard",
        "internal",
        "system",
        "root",
        "default",
        "localhost",
        "cognitionos",
        "operator",
        "operators",
        "blog",
        "ftp",
        "dev",
        "staging",
    }
)
