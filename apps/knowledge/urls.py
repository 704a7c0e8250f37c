"""REST API v1 routes of knowledge bases, mounted under /api/v1/ by apps.api.urls."""

from django.urls import path

from apps.knowledge import api

_DOCUMENT = "knowledge-bases/<uuid:knowledge_base_id>/documents/<uuid:document_id>"

urlpatterns = [
    path("knowledge-bases", api.KnowledgeBaseListCreateApi.as_view(), name="knowledge-bases"),
    path("knowledge-bases/<uuid:knowledge_base_id>", api.KnowledgeBaseDetailApi.as_view(), name="knowledge-base"),
    path(
        "knowledge-bases/<uuid:knowledge_base_id>/documents",
        api.DocumentListUploadApi.as_view(),
        name="knowledge-documents",
    ),
    path(_DOCUMENT, api.DocumentDetailApi.as_view(), name="knowledge-document"),
    path(f"{_DOCUMENT}/cancel", api.DocumentCancelApi.as_view(), name="knowledge-document-cancel"),
    path(f"{_DOCUMENT}/resume", api.DocumentResumeApi.as_view(), name="knowledge-document-resume"),
    path(f"{_DOCUMENT}/events", api.DocumentEventsApi.as_view(), name="knowledge-document-events"),
    path("knowledge-bases/<uuid:knowledge_base_id>/search", api.KnowledgeSearchApi.as_view(), name="knowledge-search"),
]
