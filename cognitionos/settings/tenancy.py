"""django-tenants: schema per organization, the template schema new organizations are cloned from."""

TENANT_MODEL = "tenants.Organization"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_NAME = "public"
# Organizations are provisioned by cloning this migrated schema (apps.tenants.template), never by
# replaying migrations. It is not an organization and is never routed to.
TENANT_TEMPLATE_SCHEMA = "_template"
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]
# Hook for the API host: a dotted path to `f(raw_key: str) -> Organization | None` that the tenant
# middleware calls with the bearer token; None until API keys exist.
TENANT_API_KEY_RESOLVER: str | None = None
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
