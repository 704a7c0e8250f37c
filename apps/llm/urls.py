"""REST API v1 routes of the LLM engine, mounted under /api/v1/ by apps.api.urls."""

from django.urls import path

from apps.llm import api

urlpatterns = [
    path("budgets", api.BudgetListSetApi.as_view(), name="budgets"),
    path("budgets/<int:budget_id>", api.BudgetDetailApi.as_view(), name="budget"),
]
