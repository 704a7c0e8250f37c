"""REST API v1 routes of this app, mounted under /api/v1/ by apps.api.urls."""

from django.urls import path

from apps.apikeys import api

urlpatterns = [
    path("keys", api.KeyListCreateApi.as_view(), name="keys"),
    path("keys/<int:key_id>/revoke", api.KeyRevokeApi.as_view(), name="key-revoke"),
]
