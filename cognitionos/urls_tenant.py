"""URLs of an organization's portal host (<slug>.<BASE_DOMAIN>)."""

from django.urls import include, path

from apps.portal.views import home

urlpatterns = [
    path("", include("cognitionos.urls_api")),
    path("", home, name="portal-home"),
]
