"""The operators' Django admin site: staff users who signed in with a second factor, on the platform
host only (cognitionos.urls_public routes /admin/; an organization's host never does).

Installed in place of "django.contrib.admin" (settings: apps.ops.admin_config.OperatorAdminConfig),
so `admin.site` everywhere is this site. A staff user without a second factor is sent to set one up;
one whose session signed in without it (the admin's own password form, say) is asked for it again
(allauth's reauthentication, which records it in the session).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast
from urllib.parse import urlencode

from allauth.account.authentication import get_authentication_records
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

_View = TypeVar("_View", bound=Callable[..., Any])


def operator_session_ok(request: HttpRequest) -> bool:
    """A staff user with a second factor whose session used it."""
    from apps.accounts.selectors import user_has_mfa

    user = request.user
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return False
    cached: bool | None = getattr(request, "_operator_session_ok", None)
    if cached is None:
        used = any(record.get("method") == "mfa" for record in get_authentication_records(request, user))
        cached = used and user_has_mfa(user_id=user.pk)
        request._operator_session_ok = cached  # type: ignore[attr-defined]
    return cached


class OperatorAdminSite(admin.AdminSite):
    site_header = "CognitionOS operations"
    site_title = "CognitionOS"
    index_title = "Operations"

    def has_permission(self, request: HttpRequest) -> bool:
        return super().has_permission(request) and operator_session_ok(request)

    def admin_view(self, view: _View, cacheable: bool = False) -> _View:
        inner = super().admin_view(view, cacheable)

        @functools.wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if user.is_authenticated and user.is_active and user.is_staff and not operator_session_ok(request):
                return _second_factor_first(request)
            response: HttpResponse = inner(request, *args, **kwargs)
            return response

        return cast(_View, guarded)

    def get_urls(self) -> list[Any]:
        from django.urls import path

        from apps.ops.admin import deployments_view, work_view

        return [
            path("ops/deployments/", self.admin_view(deployments_view), name="ops_deployments"),
            path("ops/work/", self.admin_view(work_view), name="ops_work"),
            *super().get_urls(),
        ]

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        """The registered models, and the operators' tools that are pages rather than models."""
        app_list = super().get_app_list(request, app_label)
        if app_label in (None, "ops") and request.user.is_staff:
            tools = [
                ("Deployments", "ops_deployments", "deployments"),
                ("Jobs and workflow runs", "ops_work", "work"),
            ]
            entry = next((app for app in app_list if app["app_label"] == "ops"), None)
            if entry is None:
                entry = {
                    "name": "Operations",
                    "app_label": "ops",
                    "app_url": "",
                    "has_module_perms": True,
                    "models": [],
                }
                app_list.append(entry)
            for name, url_name, object_name in tools:
                entry["models"].append(
                    {
                        "name": name,
                        "object_name": object_name,
                        "admin_url": reverse(f"admin:{url_name}", current_app=self.name),
                        "view_only": True,
                        "perms": {"view": True},
                    }
                )
        return app_list


def _second_factor_first(request: HttpRequest) -> HttpResponse:
    from apps.accounts.selectors import user_has_mfa

    following = urlencode({"next": request.get_full_path()})
    user_id = request.user.pk
    assert user_id is not None  # a signed-in staff user (admin_view checked)
    if user_has_mfa(user_id=user_id):
        return HttpResponseRedirect(f"{reverse('mfa_reauthenticate')}?{following}")
    messages.warning(request, "The operations admin requires two-factor authentication: set up an authenticator app.")
    return HttpResponseRedirect(f"{reverse('mfa_activate_totp')}?{following}")
