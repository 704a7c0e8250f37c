from django.contrib import admin
from django.http import HttpRequest

from apps.rbac.models import CustomRole, Invitation, Membership


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin[Membership]):
    list_display = ("user", "organization", "role", "custom_role", "created_at")
    list_filter = ("role",)
    list_select_related = ("user", "organization", "custom_role")
    search_fields = ("user__email", "organization__slug")
    raw_id_fields = ("user", "organization", "custom_role")


@admin.register(CustomRole)
class CustomRoleAdmin(admin.ModelAdmin[CustomRole]):
    list_display = ("name", "organization", "permissions", "created_at")
    list_select_related = ("organization",)
    search_fields = ("name", "organization__slug")
    raw_id_fields = ("organization",)


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin[Invitation]):
    """Read-only for operators: invitations are made, revoked and accepted through the services,
    which audit them and keep the plan's limit."""

    list_display = (
        "email",
        "organization",
        "role",
        "custom_role",
        "invited_by",
        "expires_at",
        "accepted_at",
        "revoked_at",
    )
    list_select_related = ("organization", "custom_role")
    search_fields = ("email", "organization__slug")
    exclude = ("token_hash",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Invitation | None = None) -> bool:
        return False
