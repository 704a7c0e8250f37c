"""URLs of the platform host: admin, health, and (later) the API and OpenAI-compatible endpoints."""

from django.contrib import admin
from django.urls import include, path

from apps.ops.metrics import metrics
from apps.portal.views import platform_home

admin.site.site_header = "CognitionOS operations"
admin.site.site_title = "CognitionOS"

urlpatterns = [
    path("", include("cognitionos.urls_api")),
    path("admin/", admin.site.urls),
    path("metrics", metrics, name="metrics"),
    path("", platform_home, name="platform-home"),
]

# Django's own error answers are JSON in the API's error shape under /api/ and /v1/.
handler400 = "apps.api.views.bad_request"
handler403 = "apps.api.views.permission_denied"
handler404 = "apps.api.views.page_not_found"
handler500 = "apps.api.views.server_error"
