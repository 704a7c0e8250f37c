from typing import Any

from django.contrib import admin
from django.db import models
from django.db.models import Max
from django.forms import BaseInlineFormSet
from django.http import HttpRequest

from apps.llm.platform.models import CatalogModel, ModelPrice, UsageRollup
from apps.llm.platform.selectors import catalog_forget


class ModelPriceInline(admin.TabularInline[ModelPrice, CatalogModel]):
    """Prices are versioned: existing versions are read-only (ledger rows name them); a change of
    price is a new row, numbered after the last."""

    model = ModelPrice
    extra = 1
    can_delete = False
    fields = ("version", "input_per_mtok", "cached_input_per_mtok", "output_per_mtok", "created_at")
    readonly_fields = ("version", "created_at")
    ordering = ("-version",)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin[CatalogModel]):
    list_display = ("name", "provider", "kind", "quality_tier", "context_window", "is_active")
    list_filter = ("provider", "kind", "is_active", "quality_tier")
    search_fields = ("name", "provider_model")
    inlines = (ModelPriceInline,)
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def save_formset(
        self, request: HttpRequest, form: Any, formset: BaseInlineFormSet[Any, Any, Any], change: bool
    ) -> None:
        for price in formset.save(commit=False):
            if price.pk is None:
                last = ModelPrice.objects.filter(model=form.instance).aggregate(v=Max("version"))["v"] or 0
                price.version = last + 1
                price.save()
        catalog_forget()

    def save_model(self, request: HttpRequest, obj: CatalogModel, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        catalog_forget()


@admin.register(UsageRollup)
class UsageRollupAdmin(admin.ModelAdmin[UsageRollup]):
    list_display = (
        "organization",
        "day",
        "model_name",
        "api_key_id",
        "requests",
        "cache_hits",
        "cost_usd",
        "saved_usd",
    )
    list_filter = ("day", "model_name")
    list_select_related = ("organization",)
    search_fields = ("organization__slug", "model_name")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UsageRollup | None = None) -> bool:
        return False
