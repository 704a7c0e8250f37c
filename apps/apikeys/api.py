"""REST API v1: API keys of the organization — create (the key is in that answer only), list, revoke."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import User
from apps.api.authentication import request_organization, request_principal
from apps.api.errors import ApiError
from apps.api.idempotency import idempotent
from apps.api.permissions import HasDeclaredPermission, IsOrganizationMember
from apps.apikeys.models import ApiKey
from apps.apikeys.selectors import apikey_get, apikey_list
from apps.apikeys.services import apikey_create, apikey_revoke
from apps.rbac.permissions import Permission

TAG = "keys"
SCOPES_HELP = (
    "Permissions the key grants: any of "
    + ", ".join(sorted(permission.value for permission in Permission))
    + " (`admin` stands for all). Never more than your own."
)


class KeyOutput(serializers.ModelSerializer[ApiKey]):
    prefix = serializers.SerializerMethodField(help_text="How the key begins (`cos_<prefix>_`): to recognise it.")
    scopes = serializers.ListField(child=serializers.CharField())
    user = serializers.EmailField(source="user.email", allow_null=True, default=None, help_text="Bound to this member.")
    created_by = serializers.CharField(source="created_by_label")
    last_used_at = serializers.DateTimeField(
        allow_null=True, help_text="Written in batches: late by up to API_KEY_LAST_USED_FLUSH_SECONDS (30 s)."
    )

    class Meta:
        model = ApiKey
        fields: tuple[str, ...] = (
            "id",
            "name",
            "prefix",
            "scopes",
            "user",
            "created_by",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
        )

    def get_prefix(self, api_key: ApiKey) -> str:
        return f"cos_{api_key.prefix}_"


class KeyWithSecretOutput(KeyOutput):
    key = serializers.SerializerMethodField(help_text="The key. Shown once: store it now (only its hash is kept).")

    class Meta(KeyOutput.Meta):
        fields = (*KeyOutput.Meta.fields, "key")

    def get_key(self, api_key: ApiKey) -> str:
        return str(self.context["key"])


class KeyCreateInput(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.CharField(max_length=32), min_length=1, max_length=len(Permission), help_text=SCOPES_HELP
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    bind_to_me = serializers.BooleanField(
        default=False,
        help_text="Bind the key to you (a member's session only): it is revoked when you leave the "
        "organization or lose one of its scopes.",
    )


@extend_schema_view(get=extend_schema(summary="List API keys (never their secrets)", tags=[TAG]))
class KeyListCreateApi(ListAPIView[ApiKey]):
    permission_classes = [IsOrganizationMember, HasDeclaredPermission]
    # Listing shows who holds which powers: for those who manage keys, not every member.
    required_permissions = {"GET": Permission.KEYS_MANAGE, "POST": Permission.KEYS_MANAGE}
    serializer_class = KeyOutput

    def get_queryset(self) -> QuerySet[ApiKey]:
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular's schema pass
            return ApiKey.objects.none()
        return apikey_list(organization=request_organization(self.request))

    @extend_schema(
        request=KeyCreateInput,
        responses={201: KeyWithSecretOutput},
        summary="Create an API key (the key is in this answer only)",
        tags=[TAG],
    )
    @idempotent(redact=("key",))
    def post(self, request: Request) -> Response:
        data = KeyCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        principal = request_principal(request)
        user = None
        if data.validated_data["bind_to_me"]:
            if principal.kind not in ("user", "operator") or principal.id is None:
                raise ApiError(
                    400, "invalid_request", "only a member's session can bind a key to themselves", param="bind_to_me"
                )
            user = User.objects.get(pk=int(principal.id))
        issued = apikey_create(
            organization=request_organization(request),
            actor=principal,
            name=data.validated_data["name"],
            scopes=data.validated_data["scopes"],
            expires_at=data.validated_data["expires_at"],
            user=user,
        )
        return Response(
            KeyWithSecretOutput(issued.api_key, context={"key": issued.key}).data,
            status=201,
            headers={"Location": f"/api/v1/keys/{issued.api_key.pk}"},
        )


class KeyRevokeApi(APIView):
    permission_classes = [IsOrganizationMember, HasDeclaredPermission]
    required_permissions = {"POST": Permission.KEYS_MANAGE}

    @extend_schema(request=None, responses=KeyOutput, summary="Revoke an API key (at once, for good)", tags=[TAG])
    def post(self, request: Request, key_id: int) -> Response:
        api_key = apikey_get(organization=request_organization(request), key_id=key_id)
        apikey_revoke(api_key=api_key, actor=request_principal(request))
        return Response(KeyOutput(api_key).data)
