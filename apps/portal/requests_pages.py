"""The request log: every governed call of the organization (gateway, jobs, workflow steps,
embeddings, playground), newest first, filtered and paged by keyset; and one call's detail with its
attempts, reservation against settlement, cache layer, and its content as the policy left it."""

from __future__ import annotations

import urllib.parse

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.apikeys.selectors import apikey_list
from apps.llm.calls import REQUEST_LOG_PAGE_SIZE, RequestLogPage, call_detail, request_log_page
from apps.portal.caller import caller_organization
from apps.portal.request_forms import KEY_CHOICES_MAX, RequestLogFilterForm, request_id_valid
from apps.rbac.decorators import permission_required
from apps.rbac.permissions import Permission

_EMPTY = RequestLogPage(rows=[], older=None, newer=None)


@permission_required(Permission.BUDGETS_READ)
@never_cache
@require_GET
def requests_list(request: HttpRequest) -> HttpResponse:
    """The log, newest first; a filter that is not valid is a 400 with its message at the field."""
    organization = caller_organization(request)
    keys = list(apikey_list(organization=organization).order_by("-id").values_list("id", "name")[:KEY_CHOICES_MAX])
    form = RequestLogFilterForm(request.GET, keys=keys)
    valid = form.is_valid()
    page = (
        request_log_page(
            filters=form.filters(),
            older_than=form.cleaned_data.get("older"),
            newer_than=form.cleaned_data.get("newer"),
        )
        if valid
        else _EMPTY
    )
    kept = form.kept() if valid else {}
    return render(
        request,
        "portal/requests/list.html",
        {
            "organization": organization,
            "form": form,
            "filter_fields": [form[name] for name in RequestLogFilterForm.FILTERS],
            "problems": not valid,
            "page_errors": form.page_errors(),
            "page": page,
            "page_size": REQUEST_LOG_PAGE_SIZE,
            "older_query": urllib.parse.urlencode({**kept, "older": page.older}) if page.older else None,
            "newer_query": urllib.parse.urlencode({**kept, "newer": page.newer}) if page.newer else None,
            "first_query": urllib.parse.urlencode(kept) if page.newer or form.cleaned_data.get("older") else None,
            "filtered": bool(kept),
        },
        status=200 if valid else 400,
    )


@permission_required(Permission.BUDGETS_READ)
@never_cache
@require_GET
def request_detail(request: HttpRequest, request_id: str) -> HttpResponse:
    """One call of this organization; another organization's request id is not found (404)."""
    if not request_id_valid(request_id):
        raise Http404("no such request")
    detail = call_detail(organization=caller_organization(request), request_id=request_id)
    if detail is None:
        raise Http404("no such request")
    return render(
        request,
        "portal/requests/detail.html",
        {"organization": caller_organization(request), "call": detail},
    )


urlpatterns: list[URLPattern] = [
    path("requests/", requests_list, name="portal-requests"),
    path("requests/<str:request_id>/", request_detail, name="portal-request-detail"),
]
