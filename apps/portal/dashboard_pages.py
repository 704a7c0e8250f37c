"""The portal's dashboard (issue 12): spend, tokens, requests, cache hits and savings, latency and
errors over a range, by model, API key and person, with the budgets' gauges; each table also as CSV.

Everything comes from the public rollups (apps.llm.usage through apps.llm.calls), which the beat's
fold fills every minute: the page never reads the ledger.
"""

from __future__ import annotations

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.llm.calls import DEFAULT_USAGE_RANGE, USAGE_RANGES, usage_recorded
from apps.portal.caller import caller_organization
from apps.portal.dashboard import BREAKDOWNS, dashboard_csv, dashboard_read, range_choices
from apps.rbac.decorators import member_may, permission_required
from apps.rbac.permissions import Permission


class RangeForm(forms.Form):
    range = forms.ChoiceField(
        choices=range_choices,
        required=False,
        error_messages={"invalid_choice": "Choose one of the ranges offered: 24h, 7d, 30d or 90d."},
    )
    by = forms.ChoiceField(
        choices=[(by, by) for by in BREAKDOWNS],
        required=False,
        error_messages={"invalid_choice": "Choose one of: time, model, key, user."},
    )

    def range_key(self) -> str:
        return str(self.cleaned_data.get("range") or DEFAULT_USAGE_RANGE)

    def breakdown(self) -> str:
        return str(self.cleaned_data.get("by") or "time")


def _problems(form: RangeForm) -> list[str]:
    return [f"{field}: {error}" for field, errors in form.errors.items() for error in errors]


@permission_required(Permission.BUDGETS_READ)
@never_cache
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    organization = caller_organization(request)
    form = RangeForm(request.GET)
    ranges = [(key, found.label) for key, found in USAGE_RANGES.items()]
    if not form.is_valid():
        context = {"organization": organization, "problems": _problems(form), "ranges": ranges}
        return render(request, "portal/dashboard/dashboard.html", context, status=400)
    range_key = form.range_key()
    read = dashboard_read(organization=organization, range_key=range_key)
    return render(
        request,
        "portal/dashboard/dashboard.html",
        {
            "organization": organization,
            "dashboard": read,
            "range_key": range_key,
            "ranges": ranges,
            # Only asked when the range is empty: a new organization is shown where to start.
            "recorded": True if not read.empty else usage_recorded(organization=organization),
            "may_manage_keys": member_may(request, Permission.KEYS_MANAGE),
            "may_invoke": member_may(request, Permission.LLM_INVOKE),
            "breakdowns": [
                ("model", "By model", "Model", "by model", *read.shown("model")),
                ("key", "By API key", "API key", "by API key", *read.shown("key")),
                ("user", "By person", "Person", "by person", *read.shown("user")),
            ],
        },
    )


@permission_required(Permission.BUDGETS_READ)
@never_cache
@require_GET
def dashboard_export(request: HttpRequest) -> HttpResponse:
    """One of the dashboard's tables (`by`: time, model, key or user) over the range, as CSV."""
    organization = caller_organization(request)
    form = RangeForm(request.GET)
    if not form.is_valid():
        return HttpResponse("\n".join(_problems(form)) + "\n", status=400, content_type="text/plain; charset=utf-8")
    range_key, by = form.range_key(), form.breakdown()
    body = dashboard_csv(dashboard_read(organization=organization, range_key=range_key), by)
    response = HttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="usage-{organization.slug}-{range_key}-by-{by}.csv"'
    return response


urlpatterns: list[URLPattern] = [
    path("usage/", dashboard, name="portal-dashboard"),
    path("usage/export.csv", dashboard_export, name="portal-dashboard-export"),
]
