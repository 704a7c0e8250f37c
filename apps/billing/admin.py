"""Operators edit plans here. A version an organization has been on is read-only: "Save as new"
makes the next version, which organizations get when they next change plan (or when an operator
moves them, apps.billing.services.organization_plan_change)."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.billing.models import OrganizationPlanPeriod, OrganizationSubscription, Plan, PlanVersion


class PlanVersionInline(admin.TabularInline[PlanVersion, Plan]):
    model = PlanVersion
    extra = 0
    fields = ("number", "included_usage_usd", "overage_allowed", "max_members", "first_used_at")
    readonly_fields = fields
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin[Plan]):
    list_display = ("code", "name", "public", "position")
    search_fields = ("code", "name")
    inlines = (PlanVersionInline,)


@admin.register(PlanVersion)
class PlanVersionAdmin(admin.ModelAdmin[PlanVersion]):
    list_display = ("plan", "number", "included_usage_usd", "overage_allowed", "max_members", "first_used_at")
    list_filter = ("plan",)
    save_as = True  # "Save as new": the way to change a version that is in use

    def get_readonly_fields(self, request: HttpRequest, obj: PlanVersion | None = None) -> Any:
        if obj is not None and obj.first_used_at is not None:
            return [field.name for field in PlanVersion._meta.fields]
        return ("first_used_at",)

    def save_model(self, request: HttpRequest, obj: PlanVersion, form: Any, change: bool) -> None:
        if not change:  # a new version, or "Save as new" of a used one
            obj.number = 0  # the next number of its plan
            obj.first_used_at = None
        super().save_model(request, obj, form, change)

    def has_delete_permission(self, request: HttpRequest, obj: PlanVersion | None = None) -> bool:
        return obj is None or obj.first_used_at is None


@admin.register(OrganizationPlanPeriod)
class OrganizationPlanPeriodAdmin(admin.ModelAdmin[OrganizationPlanPeriod]):
    list_display = ("organization", "plan_version", "starts_at", "ends_at", "reason")
    list_filter = ("reason",)
    search_fields = ("organization__slug",)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(OrganizationSubscription)
class OrganizationSubscriptionAdmin(admin.ModelAdmin[OrganizationSubscription]):
    list_display = ("organization", "status", "current_period_end", "cancel_at_period_end", "grace_until")
    list_filter = ("status",)
    search_fields = ("organization__slug",)
