"""REST API v1 routes of this app, mounted under /api/v1/ by apps.api.urls."""

from django.urls import path

from apps.rbac import api

urlpatterns = [
    path("members", api.MemberListApi.as_view(), name="members"),
    path("members/<int:membership_id>", api.MemberDetailApi.as_view(), name="member"),
    path("roles", api.RoleListCreateApi.as_view(), name="roles"),
    path("roles/<int:role_id>", api.RoleDetailApi.as_view(), name="role"),
    path("invitations", api.InvitationListCreateApi.as_view(), name="invitations"),
    path("invitations/<int:invitation_id>/revoke", api.InvitationRevokeApi.as_view(), name="invitation-revoke"),
    path("invitations/<int:invitation_id>/resend", api.InvitationResendApi.as_view(), name="invitation-resend"),
]
