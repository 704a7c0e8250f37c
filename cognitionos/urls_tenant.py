"""URLs of an organization's portal host (<slug>.<BASE_DOMAIN>)."""

from django.urls import include, path

from apps.portal.views import home

urlpatterns = [
    path("health/", include("apps.ops.urls")),
    path("", home, name="portal-home"),
]
