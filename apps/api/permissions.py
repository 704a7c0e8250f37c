from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from apps.accounts.principals import Principal


class IsOrganizationMember(BasePermission):
    """An authenticated principal acting inside an organization (never on the public schema)."""

    message = "authenticate with an API key (Authorization: Bearer ...) or a member's session"

    def has_permission(self, request: Request, view: Any) -> bool:
        tenant = getattr(request._request, "tenant", None)
        return isinstance(request.auth, Principal) and tenant is not None and not tenant.is_public
