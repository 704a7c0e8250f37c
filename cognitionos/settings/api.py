"""REST API v1: Django REST framework, drf-spectacular, idempotency keys."""

from .env import env_int

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.api.authentication.ApiKeyAuthentication",
        "apps.api.authentication.MemberSessionAuthentication",
    ],
    # Every view declares the permission each method needs (apps.api.permissions); none: refused.
    "DEFAULT_PERMISSION_CLASSES": [
        "apps.api.permissions.IsOrganizationMember",
        "apps.api.permissions.HasDeclaredPermission",
    ],
    "DEFAULT_PAGINATION_CLASS": "apps.api.pagination.CreatedCursorPagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["apps.api.parsers.BoundedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "apps.api.schema.ApiAutoSchema",
    "EXCEPTION_HANDLER": "apps.api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "CognitionOS API",
    "DESCRIPTION": (
        "Jobs, agents, workflows and webhooks of one organization. Authenticate with "
        "`Authorization: Bearer <API key>`; every create accepts an `Idempotency-Key` header."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Every durable work row (jobs, documents, embedding sets) has these statuses: one named enum.
    "ENUM_NAME_OVERRIDES": {"WorkStatusEnum": "apps.work.models.WorkStatus"},
}
# A retried create with the same Idempotency-Key returns the first answer for this long.
IDEMPOTENCY_KEY_TTL_SECONDS = env_int("IDEMPOTENCY_KEY_TTL_SECONDS", 24 * 3600)
# A claim whose request died (process killed) may be taken over after this long.
IDEMPOTENCY_PENDING_SECONDS = env_int("IDEMPOTENCY_PENDING_SECONDS", 60)
# A member's permissions (their role) are remembered per process this long: a role change made in
# another process takes effect within it (the process that makes it forgets at once).
MEMBERSHIP_CACHE_SECONDS = env_int("MEMBERSHIP_CACHE_SECONDS", 5)
# The largest request body the REST API reads (413 `request_too_large` above it), the same as the
# gateway's: a job carries a chat request.
API_MAX_REQUEST_BYTES = env_int("API_MAX_REQUEST_BYTES", 4 * 1024 * 1024)
