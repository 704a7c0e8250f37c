from django.contrib import admin

from apps.rbac.models import CustomRole, Membership


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
