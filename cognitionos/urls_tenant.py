"""URLs of an organization's portal host (<slug>.<BASE_DOMAIN>)."""

from django.urls import include, path

from apps.portal.views import handover, home

urlpatterns = [
    path("", include("cognitionos.urls_api")),
    path("handover/", handover, name="portal-handover"),
    # SAML SSO (apps.sso) before allauth's routes (in the portal's /accounts/), which it wraps.
    path("", include("apps.sso.urls")),
    path("", include("apps.portal.urls")),
    path("", home, name="portal-home"),
]

# Django's own error answers are JSON in the API's error shape under /api/ and /v1/.
handler400 = "apps.api.views.bad_request"
handler403 = "apps.api.views.permission_denied"
handler404 = "apps.api.views.page_not_found"
handler500 = "apps.api.views.server_error"
