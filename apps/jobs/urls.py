"""REST API v1 routes of this app, mounted under /api/v1/ by apps.api.urls."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
