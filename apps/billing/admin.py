from django.contrib import admin

from apps.billing.models import Plan


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin[Plan]):
    list_display = ("code", "name", "limits")
    search_fields = ("code", "name")
