"""REST API v1 routes of agents, mounted under /api/v1/ by apps.api.urls."""

from django.urls import path

from apps.agents import api

urlpatterns = [
    path("agents", api.AgentListCreateApi.as_view(), name="agents"),
    path("agents/<uuid:agent_id>", api.AgentDetailApi.as_view(), name="agent"),
]
