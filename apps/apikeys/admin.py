from django.contrib import admin
from django.http import HttpRequest

from apps.apikeys.models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    """Keys are created by their owners (the secret is shown to them once); operators can see and
    revoke, never read a secret (only its hash is stored)."""

    list_display = ("name", "prefix", "organization", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    list_select_related = ("organization",)
    search_fields = ("name", "prefix", "organization__slug")
    fields = ("organization", "name", "prefix", "created_by_label", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("organization", "name", "prefix", "created_by_label", "created_at", "last_used_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
