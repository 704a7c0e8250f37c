"""REST API v1 routes of the audit log and of data exports, mounted under /api/v1/ by cognitionos.urls_api."""

from django.urls import path

from apps.audit import api

urlpatterns = [
    path("audit-events", api.AuditEventListApi.as_view(), name="audit-events"),
    path("audit-events/export", api.AuditEventExportApi.as_view(), name="audit-events-export"),
    path("exports", api.DataExportListCreateApi.as_view(), name="data-exports"),
    path("exports/<uuid:export_id>", api.DataExportDetailApi.as_view(), name="data-export"),
    path("exports/<uuid:export_id>/download", api.DataExportDownloadApi.as_view(), name="data-export-download"),
]
