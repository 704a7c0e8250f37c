from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.accounts.principals import Principal
from apps.apikeys.models import ApiKey
from apps.apikeys.services import apikey_revoke


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    """Keys are created by their owners (the secret is shown to them once); operators can see and
    revoke, never read a secret (only its hash is stored)."""

    list_display = ("name", "prefix", "organization", "scopes", "user", "created_at", "last_used_at", "expires_at")
    list_filter = ("revoked_at", "expires_at")
    list_select_related = ("organization", "user")
    search_fields = ("name", "prefix", "organization__slug", "user__email")
    fields = (
        "organization",
        "name",
        "prefix",
        "scopes",
        "user",
        "created_by_label",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )
    readonly_fields = fields
    actions = ("revoke",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        actor = Principal.for_user(request.user)  # type: ignore[arg-type]
        for api_key in queryset.select_related("organization").filter(revoked_at__isnull=True):
            apikey_revoke(api_key=api_key, actor=actor, reason="revoked by an operator")
