"""Settings → Data export: start an export of everything the organization has, follow it, and
download it once (the REST API's signed link, which a member's session may use on this host)."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils import timezone
from django.views.decorators.cache import never_cache

from apps.audit.exports import ExportRefused, data_export_link_token, organization_export_start
from apps.audit.selectors import data_exports_list
from apps.portal.caller import caller_organization, caller_principal
from apps.rbac.decorators import permission_required
from apps.rbac.permissions import Permission
from apps.work.models import WorkStatus


@never_cache
@permission_required({"GET": Permission.ADMIN, "POST": Permission.ADMIN})
def data_export(request: HttpRequest) -> HttpResponse:
    organization = caller_organization(request)
    if request.method == "POST":
        try:
            organization_export_start(organization=organization, actor=caller_principal(request))
        except ExportRefused as refused:
            messages.error(request, str(refused).capitalize() + ".")
        else:
            messages.success(request, "Export started. This page shows its progress; reload to follow it.")
        return redirect("portal-data-export")
    rows = []
    for export in data_exports_list(organization=organization):
        link = None
        if (
            export.status == WorkStatus.SUCCEEDED
            and export.downloaded_at is None
            and export.purged_at is None
            and (export.expires_at is None or export.expires_at > timezone.now())
        ):
            token = data_export_link_token(organization=organization, export=export)
            link = f"/api/v1/exports/{export.pk}/download?{urlencode({'token': token})}"
        percent = (
            100
            if export.status == WorkStatus.SUCCEEDED
            else (int(100 * export.tables_done / export.tables_total) if export.tables_total else 0)
        )
        rows.append({"export": export, "link": link, "percent": percent})
    return render(request, "portal/data_export.html", {"organization": organization, "rows": rows})


urlpatterns = [path("settings/data-export/", data_export, name="portal-data-export")]
