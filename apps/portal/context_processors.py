"""What every portal page's shell shows: the organization, the switcher and the navigation."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.http.request import split_domain_port

from apps.portal.selectors import portal_memberships

# The portal's sections. `url_name` None: a later issue builds the page; shown as "soon", not linked.
NAVIGATION: list[dict[str, str | None]] = [
    {"label": "Home", "url_name": "portal-home"},
    {"label": "API keys", "url_name": None},
    {"label": "Members", "url_name": None},
    {"label": "Usage", "url_name": None},
    {"label": "Settings", "url_name": None},
]


def platform_origin(request: HttpRequest) -> str:
    """scheme://<BASE_DOMAIN>[:port] as seen by this request (the platform host, from any host)."""
    _host, port = split_domain_port(request.get_host())
    default_port = "443" if request.is_secure() else "80"
    suffix = f":{port}" if port and port != default_port else ""
    return f"{request.scheme}://{settings.BASE_DOMAIN}{suffix}"


def portal(request: HttpRequest) -> dict[str, Any]:
    tenant = getattr(request, "tenant", None)
    organization = tenant if tenant is not None and not tenant.is_public else None
    context: dict[str, Any] = {
        "portal_organization": organization,
        "portal_navigation": NAVIGATION,
        "portal_dev_mailbox": settings.DEV_MAILBOX,
        "portal_memberships": [],
        "portal_platform_origin": platform_origin(request),
    }
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        # Lazy: evaluated only where the template shows the switcher.
        context["portal_memberships"] = portal_memberships(user=user)
    return context
