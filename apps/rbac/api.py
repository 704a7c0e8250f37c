"""REST API v1: the organization's members and roles — list, change a member's role, remove a
member, and custom roles (on plans that include them). The rules live in apps.rbac.services."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.api.authentication import request_organization, request_principal
from apps.api.errors import ApiError
from apps.api.idempotency import idempotent
from apps.rbac.models import CustomRole, Invitation, Membership, Role
from apps.rbac.permissions import DESCRIPTIONS, ROLE_PERMISSIONS, Permission
from apps.rbac.selectors import (
    custom_role_list,
    custom_roles_included,
    invitation_link_origin,
    invitation_list,
    invitation_state,
    membership_grants,
    membership_list,
)
from apps.rbac.services import (
    custom_role_create,
    custom_role_delete,
    custom_role_update,
    invitation_create,
    invitation_resend,
    invitation_revoke,
    membership_remove,
    membership_role_change,
)

TAG = "members"


class CustomRoleOutput(serializers.ModelSerializer[CustomRole]):
    permissions = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = CustomRole
        fields = ("id", "name", "permissions", "created_at")


class MemberOutput(serializers.ModelSerializer[Membership]):
    email = serializers.EmailField(source="user.email")
    role = serializers.CharField(help_text="A built-in role; empty when the member holds a custom role.")
    custom_role = CustomRoleOutput(allow_null=True)
    permissions = serializers.SerializerMethodField(help_text="Everything the member may do here.")

    class Meta:
        model = Membership
        fields = ("id", "email", "role", "custom_role", "permissions", "created_at")

    def get_permissions(self, membership: Membership) -> list[str]:
        # membership_list loads the organization's plan with each member.
        grants = membership_grants(membership, custom_roles=custom_roles_included(membership.organization))
        return sorted(permission.value for permission in grants)


class MemberChangeInput(serializers.Serializer[Any]):
    role = serializers.ChoiceField(choices=Role.values, required=False, help_text="A built-in role.")
    custom_role = serializers.IntegerField(required=False, help_text="Or the id of a custom role.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("role" in attrs) == ("custom_role" in attrs):
            raise serializers.ValidationError("give either `role` or `custom_role`")
        return attrs


_PERMISSIONS_HELP = "Any of " + ", ".join(permission.value for permission in Permission) + "."


class CustomRoleInput(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=60)
    permissions = serializers.ListField(
        child=serializers.CharField(max_length=40), max_length=len(Permission), help_text=_PERMISSIONS_HELP
    )


class CustomRoleChangeInput(serializers.Serializer[Any]):
    permissions = serializers.ListField(
        child=serializers.CharField(max_length=40), max_length=len(Permission), help_text=_PERMISSIONS_HELP
    )


class BuiltInRoleOutput(serializers.Serializer[Any]):
    role = serializers.CharField()
    permissions = serializers.ListField(child=serializers.CharField())


class RolesOutput(serializers.Serializer[Any]):
    built_in = BuiltInRoleOutput(many=True)
    custom = CustomRoleOutput(many=True)
    permissions = serializers.DictField(child=serializers.CharField(), help_text="Every permission, described.")


def _membership(request: Request, membership_id: int) -> Membership:
    return membership_list(organization=request_organization(request)).get(pk=membership_id)


def _custom_role(request: Request, role_id: int) -> CustomRole:
    return custom_role_list(organization=request_organization(request)).get(pk=role_id)


@extend_schema_view(get=extend_schema(summary="Members and their roles", tags=[TAG]))
class MemberListApi(ListAPIView[Membership]):
    required_permissions = {"GET": Permission.MEMBERS_READ}
    serializer_class = MemberOutput

    def get_queryset(self) -> QuerySet[Membership]:
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular's schema pass
            return Membership.objects.none()
        return membership_list(organization=request_organization(self.request))


class MemberDetailApi(APIView):
    required_permissions = {
        "GET": Permission.MEMBERS_READ,
        "PATCH": Permission.MEMBERS_MANAGE,
        "DELETE": Permission.MEMBERS_MANAGE,
    }

    @extend_schema(responses=MemberOutput, summary="A member", tags=[TAG])
    def get(self, request: Request, membership_id: int) -> Response:
        return Response(MemberOutput(_membership(request, membership_id)).data)

    @extend_schema(
        request=MemberChangeInput,
        responses=MemberOutput,
        summary="Change a member's role (never above your own; the organization keeps an owner)",
        tags=[TAG],
    )
    def patch(self, request: Request, membership_id: int) -> Response:
        data = MemberChangeInput(data=request.data)
        data.is_valid(raise_exception=True)
        organization = request_organization(request)
        membership = _membership(request, membership_id)
        role: Role | CustomRole = (
            _custom_role(request, data.validated_data["custom_role"])
            if "custom_role" in data.validated_data
            else Role(data.validated_data["role"])
        )
        changed = membership_role_change(
            organization=organization, membership=membership, role=role, actor=request_principal(request)
        )
        return Response(MemberOutput(_membership(request, changed.pk)).data)

    @extend_schema(responses={204: None}, summary="Remove a member (never the last owner)", tags=[TAG])
    def delete(self, request: Request, membership_id: int) -> Response:
        membership_remove(
            organization=request_organization(request),
            membership=_membership(request, membership_id),
            actor=request_principal(request),
        )
        return Response(status=204)


class RoleListCreateApi(APIView):
    required_permissions = {"GET": Permission.MEMBERS_READ, "POST": Permission.MEMBERS_MANAGE}

    @extend_schema(
        operation_id="roles_list",
        responses=RolesOutput,
        summary="Built-in and custom roles, with their permissions",
        tags=[TAG],
    )
    def get(self, request: Request) -> Response:
        return Response(
            RolesOutput(
                {
                    "built_in": [
                        {"role": role, "permissions": sorted(p.value for p in granted)}
                        for role, granted in ROLE_PERMISSIONS.items()
                    ],
                    "custom": custom_role_list(organization=request_organization(request)),
                    "permissions": {permission.value: text for permission, text in DESCRIPTIONS.items()},
                }
            ).data
        )

    @extend_schema(
        request=CustomRoleInput,
        responses={201: CustomRoleOutput},
        summary="Create a custom role (plans with custom roles; never above your own permissions)",
        tags=[TAG],
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = CustomRoleInput(data=request.data)
        data.is_valid(raise_exception=True)
        custom_role = custom_role_create(
            organization=request_organization(request),
            name=data.validated_data["name"],
            permissions=data.validated_data["permissions"],
            actor=request_principal(request),
        )
        return Response(
            CustomRoleOutput(custom_role).data, status=201, headers={"Location": f"/api/v1/roles/{custom_role.pk}"}
        )


class RoleDetailApi(APIView):
    required_permissions = {
        "GET": Permission.MEMBERS_READ,
        "PATCH": Permission.MEMBERS_MANAGE,
        "DELETE": Permission.MEMBERS_MANAGE,
    }

    @extend_schema(responses=CustomRoleOutput, summary="A custom role", tags=[TAG])
    def get(self, request: Request, role_id: int) -> Response:
        return Response(CustomRoleOutput(_custom_role(request, role_id)).data)

    @extend_schema(
        request=CustomRoleChangeInput,
        responses=CustomRoleOutput,
        summary="Change a custom role's permissions (its members change with it)",
        tags=[TAG],
    )
    def patch(self, request: Request, role_id: int) -> Response:
        data = CustomRoleChangeInput(data=request.data)
        data.is_valid(raise_exception=True)
        custom_role = custom_role_update(
            organization=request_organization(request),
            custom_role=_custom_role(request, role_id),
            permissions=data.validated_data["permissions"],
            actor=request_principal(request),
        )
        return Response(CustomRoleOutput(custom_role).data)

    @extend_schema(responses={204: None}, summary="Delete a custom role nobody holds", tags=[TAG])
    def delete(self, request: Request, role_id: int) -> Response:
        custom_role_delete(
            organization=request_organization(request),
            custom_role=_custom_role(request, role_id),
            actor=request_principal(request),
        )
        return Response(status=204)


class InvitationOutput(serializers.ModelSerializer[Invitation]):
    role = serializers.CharField(help_text="A built-in role; empty when the invitation is to a custom role.")
    custom_role = CustomRoleOutput(allow_null=True)
    state = serializers.SerializerMethodField(help_text="open, accepted, revoked or expired.")

    class Meta:
        model = Invitation
        fields = (
            "id",
            "email",
            "role",
            "custom_role",
            "state",
            "invited_by",
            "created_at",
            "expires_at",
            "accepted_at",
            "revoked_at",
        )

    def get_state(self, invitation: Invitation) -> str:
        return invitation_state(invitation)


class InvitationInput(serializers.Serializer[Any]):
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=Role.values, required=False, help_text="A built-in role.")
    custom_role = serializers.IntegerField(required=False, help_text="Or the id of a custom role.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("role" in attrs) == ("custom_role" in attrs):
            raise serializers.ValidationError("give either `role` or `custom_role`")
        return attrs


class InvitationListCreateApi(ListAPIView[Invitation]):
    required_permissions = {"GET": Permission.MEMBERS_READ, "POST": Permission.MEMBERS_MANAGE}
    serializer_class = InvitationOutput

    def get_queryset(self) -> QuerySet[Invitation]:
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular's schema pass
            return Invitation.objects.none()
        return invitation_list(organization=request_organization(self.request))

    @extend_schema(summary="Invitations, newest first", tags=[TAG])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=InvitationInput,
        responses={201: InvitationOutput},
        summary="Invite by email (never above your own role; within the plan's max_members)",
        tags=[TAG],
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = InvitationInput(data=request.data)
        data.is_valid(raise_exception=True)
        organization = request_organization(request)
        role: Role | CustomRole = Role(data.validated_data.get("role") or Role.VIEWER)
        if "custom_role" in data.validated_data:
            try:
                role = _custom_role(request, data.validated_data["custom_role"])
            except CustomRole.DoesNotExist as missing:  # a bad reference in the body, not a missing resource
                raise ApiError(
                    400, "unknown_role", "no such custom role in this organization", param="custom_role"
                ) from missing
        invitation, _link = invitation_create(
            organization=organization,
            email=data.validated_data["email"],
            role=role,
            actor=request_principal(request),
            link_origin=invitation_link_origin(request=request, organization=organization),
        )
        return Response(
            InvitationOutput(invitation).data, status=201, headers={"Location": f"/api/v1/invitations/{invitation.pk}"}
        )


class InvitationRevokeApi(APIView):
    required_permissions = {"POST": Permission.MEMBERS_MANAGE}

    @extend_schema(request=None, responses=InvitationOutput, summary="Revoke an open invitation", tags=[TAG])
    def post(self, request: Request, invitation_id: int) -> Response:
        organization = request_organization(request)
        invitation = invitation_revoke(
            organization=organization,
            invitation=invitation_list(organization=organization).get(pk=invitation_id),
            actor=request_principal(request),
        )
        return Response(InvitationOutput(invitation).data)


class InvitationResendApi(APIView):
    required_permissions = {"POST": Permission.MEMBERS_MANAGE}

    @extend_schema(
        request=None,
        responses=InvitationOutput,
        summary="Send an open or expired invitation again: a new link (the old one stops working) and a new "
        "expiry; at most once a minute per invitation (429 rate_limited)",
        tags=[TAG],
    )
    def post(self, request: Request, invitation_id: int) -> Response:
        organization = request_organization(request)
        invitation, _link = invitation_resend(
            organization=organization,
            invitation=invitation_list(organization=organization).get(pk=invitation_id),
            actor=request_principal(request),
            link_origin=invitation_link_origin(request=request, organization=organization),
        )
        return Response(InvitationOutput(invitation).data)
