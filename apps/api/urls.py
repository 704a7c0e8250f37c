"""/api/: the versioned REST API, its OpenAPI schema and interactive documentation."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.api.views import api_not_found

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(permission_classes=[], authentication_classes=[]), name="api-schema"),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(url_name="api-schema", permission_classes=[], authentication_classes=[]),
        name="api-docs",
    ),
    path("v1/", include("apps.jobs.urls")),
    path("v1/", include("apps.agents.urls")),
    path("v1/", include("apps.workflows.urls")),
    path("v1/", include("apps.webhooks.urls")),
    path("v1/", include("apps.knowledge.urls")),
    path("v1/", include("apps.llm.urls")),
    path("v1/", include("apps.apikeys.urls")),
    path("v1/", include("apps.rbac.urls")),
    path("<path:unknown>", api_not_found),
]
