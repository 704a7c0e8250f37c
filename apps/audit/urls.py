"""REST API v1 routes of the audit log, mounted under /api/v1/ by cognitionos.urls_api."""

from django.urls import path

from apps.audit import api

urlpatterns = [
    path("audit-events", api.AuditEventListApi.as_view(), name="audit-events"),
    path("audit-events/export", api.AuditEventExportApi.as_view(), name="audit-events-export"),
]
