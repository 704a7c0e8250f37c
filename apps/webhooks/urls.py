"""REST API v1 routes of this app, mounted under /api/v1/ by apps.api.urls."""

from django.urls import path

from apps.webhooks import api

urlpatterns = [
    path("webhooks", api.EndpointListCreateApi.as_view(), name="webhooks"),
    path("webhooks/deliveries/<uuid:delivery_id>", api.DeliveryDetailApi.as_view(), name="webhook-delivery"),
    path("webhooks/deliveries/<uuid:delivery_id>/retry", api.DeliveryRetryApi.as_view(), name="webhook-delivery-retry"),
    path("webhooks/<uuid:endpoint_id>", api.EndpointDetailApi.as_view(), name="webhook"),
    path(
        "webhooks/<uuid:endpoint_id>/rotate-secret",
        api.EndpointRotateSecretApi.as_view(),
        name="webhook-rotate-secret",
    ),
    path("webhooks/<uuid:endpoint_id>/test", api.EndpointTestApi.as_view(), name="webhook-test"),
    path("webhooks/<uuid:endpoint_id>/deliveries", api.EndpointDeliveriesApi.as_view(), name="webhook-deliveries"),
]
