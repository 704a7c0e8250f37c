"""URLs of an organization's portal host (<slug>.<BASE_DOMAIN>)."""

from django.urls import path

from apps.portal.views import home

urlpatterns = [
    path("", home, name="portal-home"),
]
