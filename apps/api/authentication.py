"""Who calls the API: an API key (resolved by the tenant middleware) or a member's portal session.

Either way the view finds `request.tenant` (the organization) and `request.auth` (the Principal).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.request import Request

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.api.errors import CSRF_ADVICE, ApiError
from apps.rbac.selectors import membership_permissions_cached
from apps.tenants.models import Organization


@dataclass(frozen=True)
class KeyHolder:
    """`request.user` for a call made with an API key: a program, not a person."""

    principal: Principal
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_staff: bool = False


def _django_request(request: Request) -> HttpRequest:
    return request._request


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[KeyHolder, Principal] | None:
        principal = getattr(_django_request(request), "principal", None)
        if isinstance(principal, Principal) and principal.kind == "api_key":
            return KeyHolder(principal), principal
        if request.headers.get("Authorization", "").startswith("Bearer ") or request.headers.get("X-Api-Key"):
            # The middleware resolves keys on the API host only; anything presented and unresolved is wrong.
            tenant = getattr(_django_request(request), "tenant", None)
            if tenant is not None and not tenant.is_public:
                raise exceptions.AuthenticationFailed(
                    "API keys are accepted on the API host only (the platform host's /api/v1 and /v1), "
                    "not on an organization's portal host"
                )
            raise exceptions.AuthenticationFailed("the API key is unknown, malformed or revoked")
        return None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="cognitionos"'


class MemberSessionAuthentication(SessionAuthentication):
    """The portal's session, on the organization's own host, for members of that organization."""

    def authenticate(self, request: Request) -> tuple[User, Principal] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        user = result[0]
        tenant = getattr(_django_request(request), "tenant", None)
        if tenant is None or tenant.is_public:
            raise exceptions.PermissionDenied("you are not a member of this organization")
        permissions = membership_permissions_cached(user_id=user.pk, organization_id=tenant.pk)
        if permissions is None:
            raise exceptions.PermissionDenied("you are not a member of this organization")
        # The member's role decides what they may do here (HasDeclaredPermission checks it).
        principal = dataclasses.replace(Principal.for_user(user), permissions=permissions)
        _django_request(request).principal = principal  # type: ignore[attr-defined]
        return user, principal

    def enforce_csrf(self, request: Request) -> None:
        try:
            super().enforce_csrf(request)
        except exceptions.PermissionDenied as denied:
            raise ApiError(403, "csrf_failed", f"{denied.detail}; {CSRF_ADVICE}") from denied


def request_organization(request: Request) -> Organization:
    """The organization an authenticated API request acts in (set by the tenant middleware)."""
    tenant: Organization = _django_request(request).tenant  # type: ignore[attr-defined]
    return tenant


def request_principal(request: Request) -> Principal:
    """Who made an authenticated API request; IsOrganizationMember lets nothing else through."""
    principal = request.auth
    if not isinstance(principal, Principal):
        raise exceptions.NotAuthenticated()
    return principal
