"""Who is asking, in a portal view: the signed-in user and the organization of the host."""

from __future__ import annotations

import dataclasses

from django.http import HttpRequest

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.rbac.decorators import member_permissions
from apps.tenants.models import Organization


def caller_user(request: HttpRequest) -> User:
    """The signed-in user (views reach here only behind sign-in or `permission_required`)."""
    user = request.user
    assert isinstance(user, User)
    return user


def caller_organization(request: HttpRequest) -> Organization:
    """The organization whose host the request came to (set by the tenant middleware)."""
    return request.tenant  # type: ignore[attr-defined,no-any-return]


def caller_principal(request: HttpRequest) -> Principal:
    """The signed-in member as the services' actor, with their role's permissions (so a service's
    own checks, such as "a key never above its creator", hold for the portal as for the API)."""
    return dataclasses.replace(Principal.for_user(caller_user(request)), permissions=member_permissions(request))
