"""API URLs, served on the platform host (public schema, or the organization an API key names)."""

from django.urls import include, path

from apps.llm import anthropic_gateway, gateway

urlpatterns = [
    path("api/v1/", include("apps.audit.urls")),  # before apps.api.urls, which ends in a catch-all
    path("api/", include("apps.api.urls")),
    path("v1/chat/completions", gateway.chat_completions, name="openai-chat-completions"),
    path("v1/embeddings", gateway.embeddings, name="openai-embeddings"),
    path("v1/models", gateway.models, name="openai-models"),
    path("v1/messages", anthropic_gateway.messages, name="anthropic-messages"),
]
