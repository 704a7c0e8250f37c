"""Permission checks for server-rendered (portal) views, the same matrix as the REST API's.

    @permission_required({"GET": Permission.KEYS_MANAGE, "POST": Permission.KEYS_MANAGE})
    def keys(request): ...

A view declares the permission each method needs (as API views do with `required_permissions`,
which this decorator also sets on the view so a test can walk the portal's URLs too). A method not
declared is refused; a member without the permission gets 403; someone signed out is sent to sign
in. Templates hide what a role may not do with `member_permissions(request)`.
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from apps.rbac.permissions import Permission
from apps.rbac.selectors import membership_permissions_cached

ViewFunction = TypeVar("ViewFunction", bound=Callable[..., HttpResponseBase])


# What a signed-in user who is not a member may hold on an organization's host, by another rule
# than membership: apps.ops registers the operators' time-limited support access here (rbac sits
# below it). A source returns permission values, or None for nothing; asked on each request.
PermissionSource = Callable[[HttpRequest, Any], "frozenset[str] | None"]
_PERMISSION_SOURCES: list[PermissionSource] = []


def member_permissions_source_register(source: PermissionSource) -> None:
    if source not in _PERMISSION_SOURCES:
        _PERMISSION_SOURCES.append(source)


def member_permissions(request: HttpRequest) -> frozenset[str]:
    """What the signed-in user may do in the organization of this host (empty when nothing)."""
    cached: frozenset[str] | None = getattr(request, "_member_permissions", None)
    if cached is not None:
        return cached
    tenant = getattr(request, "tenant", None)
    user = getattr(request, "user", None)
    held: frozenset[str] | None = None
    if tenant is not None and not tenant.is_public and user is not None and user.is_authenticated:
        held = membership_permissions_cached(user_id=user.pk, organization_id=tenant.pk)
        for source in _PERMISSION_SOURCES if held is None else ():
            held = source(request, tenant)
            if held is not None:
                break
    permissions = held or frozenset()
    request._member_permissions = permissions  # type: ignore[attr-defined]
    return permissions


def member_may(request: HttpRequest, permission: Permission) -> bool:
    held = member_permissions(request)
    return permission.value in held or Permission.ADMIN.value in held


def _sign_in_first(request: HttpRequest) -> HttpResponseBase:
    """To the sign-in page, and back here after it. A fragment that HTMX polls after the session
    ended sends the whole page there (HX-Redirect, back to the page it was on), instead of the
    sign-in form landing in the fragment's place."""
    if request.headers.get("HX-Request") != "true":
        return redirect_to_login(request.get_full_path())
    page = urllib.parse.urlsplit(request.headers.get("HX-Current-URL", "")).path
    if not page.startswith("/") or page.startswith("//"):  # only a path on this host
        page = "/"
    response = HttpResponse(status=401)
    response["HX-Redirect"] = redirect_to_login(page).url
    return response


def permission_required(
    declared: Permission | Mapping[str, Permission],
) -> Callable[[ViewFunction], ViewFunction]:
    """Refuse a request unless the member holds the permission declared for its method (HEAD as
    GET). A single permission applies to GET and POST."""
    required = {"GET": declared, "POST": declared} if isinstance(declared, Permission) else dict(declared)

    def decorate(view: ViewFunction) -> ViewFunction:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not request.user.is_authenticated:
                return _sign_in_first(request)
            needed = required.get("GET" if request.method == "HEAD" else (request.method or "GET"))
            if needed is None or not member_may(request, needed):
                raise PermissionDenied("your role doesn't allow this")
            return view(request, *args, **kwargs)

        wrapped.required_permissions = required  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]

    return decorate
