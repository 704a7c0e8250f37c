"""REST API v1 routes of workflows and runs, mounted under /api/v1/ by apps.api.urls."""

from django.urls import path

from apps.workflows import api

urlpatterns = [
    path("workflows", api.WorkflowListCreateApi.as_view(), name="workflows"),
    path("workflows/<uuid:workflow_id>", api.WorkflowDetailApi.as_view(), name="workflow"),
    path("workflows/<uuid:workflow_id>/versions", api.WorkflowVersionsApi.as_view(), name="workflow-versions"),
    path("workflows/<uuid:workflow_id>/preview", api.WorkflowPreviewApi.as_view(), name="workflow-preview"),
    path("workflows/<uuid:workflow_id>/runs", api.WorkflowRunsApi.as_view(), name="workflow-runs"),
    path("runs", api.RunListApi.as_view(), name="runs"),
    path("runs/<uuid:run_id>", api.RunDetailApi.as_view(), name="run"),
    path("runs/<uuid:run_id>/cancel", api.RunCancelApi.as_view(), name="run-cancel"),
    path("runs/<uuid:run_id>/rerun", api.RunRerunApi.as_view(), name="run-rerun"),
    path("runs/<uuid:run_id>/events", api.RunEventsApi.as_view(), name="run-events"),
]
