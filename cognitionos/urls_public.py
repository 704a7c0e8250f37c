"""URLs of the platform host: admin, health, and (later) the API and OpenAI-compatible endpoints."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from apps.ops.metrics import metrics
from apps.portal.views import dev_mailbox, platform_home

admin.site.site_header = "CognitionOS operations"
admin.site.site_title = "CognitionOS"

urlpatterns = [
    path("", include("cognitionos.urls_api")),
    path("admin/", admin.site.urls),
    path("metrics", metrics, name="metrics"),
    path("", include("apps.billing.urls")),  # Stripe's webhook endpoint
    # SAML SSO (apps.sso) before allauth's routes (in the portal's /accounts/), which it wraps.
    path("", include("apps.sso.urls")),
    path("", include("apps.portal.urls")),
    path("", platform_home, name="platform-home"),
]
if settings.DEV_MAILBOX:  # development and tests only: never routed in production
    urlpatterns.append(path("dev/mail/", dev_mailbox, name="dev-mailbox"))

# Django's own error answers are JSON in the API's error shape under /api/ and /v1/.
handler400 = "apps.api.views.bad_request"
handler403 = "apps.api.views.permission_denied"
handler404 = "apps.api.views.page_not_found"
handler500 = "apps.api.views.server_error"
