"""Anomalies in the operators' admin: what the detector saw, against what, and what it did
(apps.ops.anomalies). Read-only; one action: resolve and let the series learn its level again."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.ops.anomalies import anomaly_relearn
from apps.ops.models import Anomaly
from apps.ops.services import OperatorActionRefused, operator_principal


class AnomalyStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "Open"), ("resolved", "Resolved")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Anomaly]) -> QuerySet[Anomaly]:
        if self.value() == "open":
            return queryset.filter(resolved_at=None)
        if self.value() == "resolved":
            return queryset.exclude(resolved_at=None)
        return queryset


@admin.register(Anomaly)
class AnomalyAdmin(admin.ModelAdmin[Anomaly]):
    list_display = ("opened_at", "kind", "subject", "state", "observed", "baseline", "threshold", "unit", "resolved_at")
    list_filter = (AnomalyStateFilter, "kind")
    search_fields = ("subject",)
    date_hierarchy = "opened_at"
    list_per_page = 100
    show_full_result_count = False
    actions = ("relearn",)
    fields = (
        "kind",
        "subject",
        "organization",
        "opened_at",
        "resolved_at",
        "observed",
        "baseline",
        "threshold",
        "peak",
        "last_value",
        "unit",
        "explanation",
        "action",
    )
    readonly_fields = fields

    @admin.display(description="State")
    def state(self, obj: Anomaly) -> str:
        return "open" if obj.is_open else "resolved"

    @admin.action(description="Resolve, and let the series learn its normal level again")
    def relearn(self, request: HttpRequest, queryset: QuerySet[Anomaly]) -> None:
        try:
            actor = operator_principal(request.user)  # type: ignore[arg-type]
        except OperatorActionRefused as refused:
            messages.error(request, str(refused))
            return
        done = 0
        for anomaly in queryset[:100]:
            anomaly_relearn(anomaly=anomaly, actor=actor)
            done += 1
        messages.success(request, f"{done} anomal{'y' if done == 1 else 'ies'} resolved; their series learn again.")

    def _staff(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_staff)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._staff(request)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._staff(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._staff(request)  # the list action; every field is read-only

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
