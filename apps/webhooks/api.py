"""REST API v1: webhook endpoints, their secrets, test events and delivery logs."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import django_filters
from django.conf import settings
from django.db.models import Q, QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.api.authentication import request_organization, request_principal
from apps.api.filters import UtcIsoDateTimeFilter
from apps.api.idempotency import idempotent
from apps.rbac.permissions import Permission
from apps.webhooks.events import EVENT_TYPES
from apps.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, delivery_status_q
from apps.webhooks.selectors import (
    webhook_delivery_get,
    webhook_delivery_list,
    webhook_endpoint_get,
    webhook_endpoint_list,
)
from apps.webhooks.services import (
    MAX_GRACE_SECONDS,
    webhook_delivery_retry,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_test,
    webhook_endpoint_update,
    webhook_secret_rotate,
)

TAG = "webhooks"
EVENTS_HELP = (
    "Event types to receive: any of " + ", ".join(sorted(EVENT_TYPES)) + "; a family such as `job.*`; or `*` for all."
)


def _endpoint(endpoint_id: UUID) -> WebhookEndpoint:
    return webhook_endpoint_get(endpoint_id=endpoint_id)


class EndpointOutput(serializers.ModelSerializer[WebhookEndpoint]):
    secret_last4 = serializers.CharField(source="secret_hint", help_text="The secret's last characters.")
    previous_secret_expires_at = serializers.SerializerMethodField(
        help_text="Until then the secret replaced by the last rotation signs too (a second `v1=`)."
    )
    created_by = serializers.CharField(source="created_by_label")

    class Meta:
        model = WebhookEndpoint
        fields: tuple[str, ...] = (
            "id",
            "url",
            "description",
            "events",
            "is_active",
            "secret_last4",
            "previous_secret_expires_at",
            "created_by",
            "created_at",
            "updated_at",
        )

    def get_previous_secret_expires_at(self, endpoint: WebhookEndpoint) -> str | None:
        expires = endpoint.previous_secret_expires_at
        return serializers.DateTimeField().to_representation(expires) if expires is not None else None


class EndpointWithSecretOutput(EndpointOutput):
    secret = serializers.SerializerMethodField(
        help_text="The signing secret (`whsec_...`). Shown once: store it now; rotate it if lost."
    )

    class Meta(EndpointOutput.Meta):
        fields = (*EndpointOutput.Meta.fields, "secret")

    def get_secret(self, endpoint: WebhookEndpoint) -> str:
        return str(self.context["secret"])


class EndpointCreateInput(serializers.Serializer[Any]):
    url = serializers.CharField(max_length=2000, help_text="An https (or http) URL on a public address.")
    events = serializers.ListField(child=serializers.CharField(max_length=100), help_text=EVENTS_HELP)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class EndpointUpdateInput(serializers.Serializer[Any]):
    url = serializers.CharField(max_length=2000, required=False)
    events = serializers.ListField(child=serializers.CharField(max_length=100), required=False, help_text=EVENTS_HELP)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    is_active = serializers.BooleanField(required=False, help_text="A disabled endpoint receives nothing.")


class RotateInput(serializers.Serializer[Any]):
    grace_period_seconds = serializers.IntegerField(
        min_value=0,
        max_value=MAX_GRACE_SECONDS,
        default=24 * 3600,
        help_text="How long the old secret keeps signing as well (0: stop now).",
    )


class DeliveryOutput(serializers.ModelSerializer[WebhookDelivery]):
    endpoint_id = serializers.UUIDField()
    redelivery_of = serializers.UUIDField(source="redelivery_of_id", allow_null=True)
    status = serializers.ChoiceField(
        source="delivery_status",
        choices=DeliveryStatus.choices,
        help_text="pending: not tried yet; retrying: tried, another attempt at `next_attempt_at`; "
        "succeeded; failed: out of attempts, or the endpoint was disabled.",
    )
    last_error = serializers.CharField(source="error_message")
    delivered_at = serializers.DateTimeField(allow_null=True)
    max_attempts = serializers.SerializerMethodField()
    payload = serializers.JSONField()

    class Meta:
        model = WebhookDelivery
        fields = (
            "id",
            "endpoint_id",
            "event_id",
            "event_type",
            "status",
            "attempts",
            "max_attempts",
            "next_attempt_at",
            "last_attempt_at",
            "last_response_status",
            "last_response_excerpt",
            "last_error",
            "last_duration_ms",
            "created_at",
            "delivered_at",
            "redelivery_of",
            "payload",
        )

    def get_max_attempts(self, delivery: WebhookDelivery) -> int:
        return int(settings.WEBHOOK_MAX_ATTEMPTS)


class DeliveryFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=DeliveryStatus.choices, method="filter_status")
    event_type = django_filters.CharFilter()
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = WebhookDelivery
        fields = ("status", "event_type")

    def filter_status(
        self, queryset: QuerySet[WebhookDelivery], name: str, value: list[str]
    ) -> QuerySet[WebhookDelivery]:
        if not value:
            return queryset
        matching = Q()
        for status in value:
            matching |= delivery_status_q(status)
        return queryset.filter(matching)


@extend_schema_view(get=extend_schema(summary="List webhook endpoints", tags=[TAG]))
class EndpointListCreateApi(ListAPIView[WebhookEndpoint]):
    required_permissions = {"GET": Permission.WEBHOOKS_MANAGE, "POST": Permission.WEBHOOKS_MANAGE}
    serializer_class = EndpointOutput

    def get_queryset(self) -> QuerySet[WebhookEndpoint]:
        return webhook_endpoint_list()

    @extend_schema(
        request=EndpointCreateInput,
        responses={201: EndpointWithSecretOutput},
        summary="Create a webhook endpoint (its signing secret is in this answer only)",
        tags=[TAG],
    )
    @idempotent(redact=("secret",))
    def post(self, request: Request) -> Response:
        data = EndpointCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint, secret = webhook_endpoint_create(
            organization=request_organization(request), actor=request_principal(request), **data.validated_data
        )
        return Response(
            EndpointWithSecretOutput(endpoint, context={"secret": secret}).data,
            status=201,
            headers={"Location": f"/api/v1/webhooks/{endpoint.pk}"},
        )


class EndpointDetailApi(APIView):
    required_permissions = {
        "GET": Permission.WEBHOOKS_MANAGE,
        "PATCH": Permission.WEBHOOKS_MANAGE,
        "DELETE": Permission.WEBHOOKS_MANAGE,
    }

    @extend_schema(responses=EndpointOutput, summary="A webhook endpoint", tags=[TAG])
    def get(self, request: Request, endpoint_id: UUID) -> Response:
        return Response(EndpointOutput(_endpoint(endpoint_id)).data)

    @extend_schema(
        request=EndpointUpdateInput, responses=EndpointOutput, summary="Change a webhook endpoint", tags=[TAG]
    )
    def patch(self, request: Request, endpoint_id: UUID) -> Response:
        _endpoint(endpoint_id)
        data = EndpointUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = webhook_endpoint_update(
            organization=request_organization(request),
            actor=request_principal(request),
            endpoint_id=endpoint_id,
            **data.validated_data,
        )
        return Response(EndpointOutput(endpoint).data)

    @extend_schema(responses={204: None}, summary="Delete a webhook endpoint and its delivery log", tags=[TAG])
    def delete(self, request: Request, endpoint_id: UUID) -> Response:
        webhook_endpoint_delete(
            organization=request_organization(request), actor=request_principal(request), endpoint_id=endpoint_id
        )
        return Response(status=204)


class EndpointRotateSecretApi(APIView):
    required_permissions = {"POST": Permission.WEBHOOKS_MANAGE}

    @extend_schema(
        request=RotateInput,
        responses={200: EndpointWithSecretOutput},
        summary="Rotate the signing secret (the new one is in this answer only)",
        tags=[TAG],
    )
    @idempotent(redact=("secret",))
    def post(self, request: Request, endpoint_id: UUID) -> Response:
        data = RotateInput(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint, secret = webhook_secret_rotate(
            organization=request_organization(request),
            actor=request_principal(request),
            endpoint_id=endpoint_id,
            grace_s=data.validated_data["grace_period_seconds"],
        )
        return Response(EndpointWithSecretOutput(endpoint, context={"secret": secret}).data)


class EndpointTestApi(APIView):
    required_permissions = {"POST": Permission.WEBHOOKS_MANAGE}

    @extend_schema(
        request=None,
        responses={
            202: DeliveryOutput,
            409: OpenApiResponse(description="the endpoint is disabled (code `endpoint_disabled`)"),
        },
        summary="Send a `webhook.test` event to the endpoint",
        tags=[TAG],
    )
    @idempotent
    def post(self, request: Request, endpoint_id: UUID) -> Response:
        delivery = webhook_endpoint_test(
            organization=request_organization(request), actor=request_principal(request), endpoint_id=endpoint_id
        )
        return Response(DeliveryOutput(delivery).data, status=202)


@extend_schema_view(
    get=extend_schema(summary="An endpoint's delivery log, newest first (filter by `status`)", tags=[TAG])
)
class EndpointDeliveriesApi(ListAPIView[WebhookDelivery]):
    required_permissions = {"GET": Permission.WEBHOOKS_MANAGE}
    serializer_class = DeliveryOutput
    filterset_class = DeliveryFilter

    def get_queryset(self) -> QuerySet[WebhookDelivery]:
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular's schema pass
            return WebhookDelivery.objects.none()
        endpoint = _endpoint(self.kwargs["endpoint_id"])
        return webhook_delivery_list(endpoint_id=endpoint.pk)


class DeliveryDetailApi(APIView):
    required_permissions = {"GET": Permission.WEBHOOKS_MANAGE}

    @extend_schema(responses=DeliveryOutput, summary="One delivery: status, attempts, last response", tags=[TAG])
    def get(self, request: Request, delivery_id: UUID) -> Response:
        return Response(DeliveryOutput(webhook_delivery_get(delivery_id=delivery_id)).data)


class DeliveryRetryApi(APIView):
    required_permissions = {"POST": Permission.WEBHOOKS_MANAGE}

    @extend_schema(
        request=None,
        responses={
            202: DeliveryOutput,
            409: OpenApiResponse(
                description="the endpoint is disabled (`endpoint_disabled`) or an attempt is in flight "
                "(`delivery_in_progress`)"
            ),
        },
        summary="Send a delivery again now (a finished one as a new delivery of the same event)",
        tags=[TAG],
    )
    @idempotent
    def post(self, request: Request, delivery_id: UUID) -> Response:
        delivery = webhook_delivery_retry(
            organization=request_organization(request), actor=request_principal(request), delivery_id=delivery_id
        )
        return Response(DeliveryOutput(delivery).data, status=202)
