"""django-tenants: schema per organization, the template schema new organizations are cloned from."""

from .env import env_int

TENANT_MODEL = "tenants.Organization"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_NAME = "public"
# Organizations are provisioned by cloning this migrated schema (apps.tenants.template), never by
# replaying migrations. It is not an organization and is never routed to.
TENANT_TEMPLATE_SCHEMA = "_template"
# Schemas kept built ahead of sign-ups (apps.tenants.services.ready_schemas_refill): a sign-up renames
# one instead of running the template's script. Each holds the relations of an organization; 0: none.
TENANT_READY_SCHEMAS = env_int("TENANT_READY_SCHEMAS", 3)
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]
# Django's migrate, run by django-tenants in each schema, without rendering models for the migrations
# the router keeps out of that schema (apps.tenants.migrating: half of a fresh database's migrate).
TENANT_BASE_MIGRATE_COMMAND = "apps.tenants.migrating.Command"
# Hook for the API host: a dotted path to `f(raw_key: str) -> (Organization, Principal) | None` that
# the tenant middleware calls with the bearer token.
TENANT_API_KEY_RESOLVER: str | None = "apps.apikeys.selectors.apikey_resolve"
# Unknown API keys (apps.apikeys.attempts): a miss is remembered this long, by the key's SHA-256
# and never the key, so a client repeating a wrong key costs no query; and one client address may
# fail this many times in a minute before every key it presents is answered 429 for the rest of it.
API_KEY_MISS_CACHE_SECONDS = env_int("API_KEY_MISS_CACHE_SECONDS", 30)
API_KEY_FAILURES_PER_MINUTE = env_int("API_KEY_FAILURES_PER_MINUTE", 20)
# API keys' last use is written in batches this often (apps.apikeys.usage); 0: only when flushed.
API_KEY_LAST_USED_FLUSH_SECONDS = env_int("API_KEY_LAST_USED_FLUSH_SECONDS", 30)
# The client address is REMOTE_ADDR unless this many proxies in front append the address they
# received from to X-Forwarded-For; entries left of theirs are the client's own say, never trusted.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
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
