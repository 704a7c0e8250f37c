"""Who is asking, in a portal view: the signed-in user and the organization of the host."""

from __future__ import annotations

from django.http import HttpRequest

from apps.accounts.models import User
from apps.tenants.models import Organization


def caller_user(request: HttpRequest) -> User:
    """The signed-in user (views reach here only behind sign-in or `permission_required`)."""
    user = request.user
    assert isinstance(user, User)
    return user


def caller_organization(request: HttpRequest) -> Organization:
    """The organization whose host the request came to (set by the tenant middleware)."""
    return request.tenant  # type: ignore[attr-defined,no-any-return]
