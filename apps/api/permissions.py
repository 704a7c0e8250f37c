"""Who may call an endpoint: every API view declares the permission each method needs.

    class BudgetListSetApi(APIView):
        required_permissions = {"GET": Permission.BUDGETS_READ, "POST": Permission.BUDGETS_MANAGE}

The principal's permissions (an API key's scopes, a member's role; apps.rbac.permissions) must
include it. A method the view handles but declares nothing for is refused, so a new endpoint can't
be open by omission (and tests/rbac walks every URL, with every role and a key of each scope, to
check each one declares and answers as the matrix says). A method the view has no handler for
answers 405. HasDeclaredPermission is a default permission class (cognitionos/settings/api.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from apps.accounts.principals import Principal
from apps.rbac.permissions import Permission


class IsOrganizationMember(BasePermission):
    """An authenticated principal acting inside an organization (never on the public schema)."""

    message = "authenticate with an API key (Authorization: Bearer ...) or a member's session"

    def has_permission(self, request: Request, view: Any) -> bool:
        tenant = getattr(request._request, "tenant", None)
        return isinstance(request.auth, Principal) and tenant is not None and not tenant.is_public


def required_permission(view: Any, method: str) -> Permission | None:
    """The permission a view declares for an HTTP method (HEAD and OPTIONS as GET)."""
    declared: Mapping[str, Permission] | None = getattr(view, "required_permissions", None)
    if declared is None:
        return None
    return declared.get("GET" if method in ("HEAD", "OPTIONS") else method)


class HasDeclaredPermission(BasePermission):
    """The principal holds the permission the view declares for this method."""

    message = "your role or your key's scopes don't allow this"

    def has_permission(self, request: Request, view: Any) -> bool:
        method = request.method or "GET"
        if method not in ("HEAD", "OPTIONS") and not hasattr(view, method.lower()):
            # No handler: nothing to protect, and the view answers 405 with its Allow header (a
            # refusal here would hide that the method doesn't exist).
            return isinstance(request.auth, Principal)
        needed = required_permission(view, method)
        principal = request.auth
        if needed is None or not isinstance(principal, Principal):
            return False
        held = principal.permissions
        if held is None:
            return False
        return needed.value in held or Permission.ADMIN.value in held
