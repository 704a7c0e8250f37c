"""REST API v1 routes of jobs, mounted under /api/v1/ by apps.api.urls (agents': apps.agents.urls)."""

from django.urls import path

from apps.jobs import api

urlpatterns = [
    path("jobs", api.JobListCreateApi.as_view(), name="jobs"),
    path("jobs/<uuid:job_id>", api.JobDetailApi.as_view(), name="job"),
    path("jobs/<uuid:job_id>/cancel", api.JobCancelApi.as_view(), name="job-cancel"),
    path("jobs/<uuid:job_id>/events", api.JobEventsApi.as_view(), name="job-events"),
]
