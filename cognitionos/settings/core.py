"""Django core: applications, middleware, templates, authentication, internationalisation."""

import hashlib
from pathlib import Path

from .env import env_bool, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent

SECRET_KEY = env_str("SECRET_KEY")
# API keys are stored as HMAC-SHA256 under this key; by default derived from SECRET_KEY. Set it on
# its own to rotate SECRET_KEY without invalidating every API key.
API_KEY_HASH_KEY = env_str("API_KEY_HASH_KEY", hashlib.sha256(f"api-keys:{SECRET_KEY}".encode()).hexdigest())
DEBUG = env_bool("DEBUG", False)

# The platform's own host: the admin, the API and the OpenAI-compatible endpoints live here, and
# every organization's portal is <slug>.<BASE_DOMAIN>.
BASE_DOMAIN = env_str("BASE_DOMAIN", "localhost")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [BASE_DOMAIN, f".{BASE_DOMAIN}"])

SHARED_APPS = [
    "apps.tenants",  # first: its migrate commands (which also migrate the template) win
    "django_tenants",
    "apps.accounts",
    "apps.rbac",
    "apps.billing",
    "djstripe",  # public schema only: Stripe objects belong to the platform
    "apps.ops",
    "apps.apikeys",
    "apps.sso",
    "apps.llm.platform",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    # django.contrib.admin, as the operators' site (staff with a second factor): apps.ops.admin_site
    "apps.ops.admin_config.OperatorAdminConfig",
    "django.contrib.staticfiles",
    "django.contrib.postgres",  # OpClass in index expressions (the knowledge vectors), full-text search
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    # SAML SSO (apps.sso): allauth's provider, one app per organization built from its IdentityProvider.
    "allauth.socialaccount",
    "allauth.socialaccount.providers.saml",
    "django_htmx",
    "apps.portal",
]
TENANT_APPS = [
    "apps.audit",
    "apps.llm",
    "apps.knowledge",
    "apps.api",
    "apps.work",  # the durable-work runtime: no tables of its own, its tasks run every kind
    "apps.agents",
    "apps.jobs",
    "apps.workflows",
    "apps.webhooks",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

# Middleware only browser requests need: left out of the chain of the model API's endpoints (/v1/:
# programs with API keys, never a browser session; cognitionos/wsgi.py), where it would do nothing
# but cost CPU on every call.
BROWSER_ONLY_MIDDLEWARE: set[str] = set()


def _browser_only(path: str) -> str:
    BROWSER_ONLY_MIDDLEWARE.add(path)
    return path


MIDDLEWARE = [
    # First: every request's log lines carry its id (X-Request-ID, echoed in the response).
    "apps.ops.request_id.RequestIdMiddleware",
    "apps.ops.middleware.HealthCheckMiddleware",
    # HTTP metrics (django-prometheus): from here, so health probes are not counted as traffic.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "apps.tenants.middleware.TenantMiddleware",
    "django.middleware.security.SecurityMiddleware",
    _browser_only("whitenoise.middleware.WhiteNoiseMiddleware"),
    _browser_only("django.contrib.sessions.middleware.SessionMiddleware"),
    "django.middleware.common.CommonMiddleware",
    _browser_only("django.middleware.csrf.CsrfViewMiddleware"),
    _browser_only("django.contrib.auth.middleware.AuthenticationMiddleware"),
    # Right after it: a sign-out on any host ends the person's sessions on every host.
    _browser_only("apps.portal.middleware.SignedOutMiddleware"),
    # Django's MessageMiddleware, its storage made on first use (API calls never use it).
    _browser_only("apps.portal.middleware.MessagesOnUseMiddleware"),
    _browser_only("django.middleware.clickjacking.XFrameOptionsMiddleware"),
    _browser_only("allauth.account.middleware.AccountMiddleware"),
    # After authentication and allauth's: an organization's "require MFA for all members".
    _browser_only("apps.portal.middleware.OrganizationMfaMiddleware"),
    _browser_only("django_htmx.middleware.HtmxMiddleware"),
    # A page the organization's plan refuses says what the plan lacks, with a link to the plan page.
    _browser_only("apps.portal.plan_refusals.EntitlementRefusedMiddleware"),
    # Last: responses by status, view name and method (bounded labels: the view's URL name, known methods).
    "apps.ops.metrics.BoundedPrometheusAfterMiddleware",
]

ROOT_URLCONF = "cognitionos.urls_tenant"
PUBLIC_SCHEMA_URLCONF = "cognitionos.urls_public"
WSGI_APPLICATION = "cognitionos.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.portal.context_processors.portal",
            ],
        },
    },
]

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# allauth and mail: settings/accounts.py

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# How long the longest job may run; the broker's visibility timeout is set above it.
LONGEST_JOB_SECONDS = 3600
