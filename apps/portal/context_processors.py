"""What every portal page's shell shows: the organization, the switcher and the navigation."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.http.request import split_domain_port
from django.urls import NoReverseMatch, reverse

from apps.portal.selectors import portal_memberships
from apps.rbac.decorators import member_may
from apps.rbac.permissions import Permission

# The portal's sections, in groups. A page the member's role may not open is not offered (its view
# refuses it too); `permission` is what opening the page needs.
NAVIGATION: list[dict[str, str]] = [
    {"group": "", "label": "Home", "url_name": "portal-home"},
    {"group": "Monitor", "label": "Dashboard", "url_name": "portal-dashboard", "permission": "budgets:read"},
    {"group": "Monitor", "label": "Request log", "url_name": "portal-requests", "permission": "budgets:read"},
    {"group": "Build", "label": "Playground", "url_name": "portal-playground", "permission": "llm:invoke"},
    {"group": "Build", "label": "Jobs", "url_name": "portal-jobs", "permission": "jobs:read"},
    {"group": "Build", "label": "Agents", "url_name": "portal-agents", "permission": "jobs:read"},
    {"group": "Build", "label": "Workflows", "url_name": "portal-workflows", "permission": "workflows:read"},
    {"group": "Build", "label": "Knowledge", "url_name": "portal-knowledge", "permission": "knowledge:read"},
    {"group": "Build", "label": "Webhooks", "url_name": "portal-webhooks", "permission": "webhooks:manage"},
    {"group": "Manage", "label": "API keys", "url_name": "portal-keys", "permission": "keys:manage"},
    {"group": "Manage", "label": "Provider keys", "url_name": "portal-provider-keys", "permission": "security:manage"},
    {"group": "Manage", "label": "Budgets", "url_name": "portal-budgets", "permission": "budgets:read"},
    {
        "group": "Manage",
        "label": "Model settings",
        "url_name": "portal-model-settings",
        "permission": "security:manage",
    },
    {"group": "Organization", "label": "Members", "url_name": "portal-members", "permission": "members:read"},
    {"group": "Organization", "label": "Security", "url_name": "portal-security", "permission": "security:manage"},
    {"group": "Organization", "label": "Single sign-on", "url_name": "portal-sso", "permission": "security:manage"},
    {"group": "Organization", "label": "Audit log", "url_name": "portal-audit", "permission": "audit:read"},
    {"group": "Organization", "label": "Data export", "url_name": "portal-data-export", "permission": "admin"},
    {
        "group": "Organization",
        "label": "Plan and billing",
        "url_name": "portal-billing",
        "permission": "billing:manage",
    },
]


def platform_origin(request: HttpRequest) -> str:
    """scheme://<BASE_DOMAIN>[:port] as seen by this request (the platform host, from any host)."""
    _host, port = split_domain_port(request.get_host())
    default_port = "443" if request.is_secure() else "80"
    suffix = f":{port}" if port and port != default_port else ""
    return f"{request.scheme}://{settings.BASE_DOMAIN}{suffix}"


def _may(request: HttpRequest, permission: str) -> bool:
    return member_may(request, Permission(permission))


def _navigation(request: HttpRequest) -> list[dict[str, str]]:
    """The sections the member's role may open (a page it may not is not offered; its view refuses
    it too), each with its link and whether the page shown is it ("page") or inside it ("true": a
    job's page is in Jobs)."""
    offered = []
    for item in NAVIGATION:
        if item.get("permission") and not _may(request, item["permission"]):
            continue
        try:
            offered.append({**item, "url": reverse(item["url_name"])})
        except NoReverseMatch:  # a section this host doesn't serve
            continue
    path = request.path
    inside = [item for item in offered if item["url"] != "/" and path.startswith(item["url"])]
    section = max(inside, key=lambda item: len(item["url"]), default=None)
    for item in offered:
        item["current"] = "page" if path == item["url"] else "true" if item is section else ""
    return offered


def portal(request: HttpRequest) -> dict[str, Any]:
    tenant = getattr(request, "tenant", None)
    organization = tenant if tenant is not None and not tenant.is_public else None
    navigation = _navigation(request) if organization is not None else []
    context: dict[str, Any] = {
        "portal_organization": organization,
        "portal_navigation": navigation,
        # The plan page's link, where the member may open it: plan refusals link to it ("See plans").
        "portal_billing_url": next((item["url"] for item in navigation if item["url_name"] == "portal-billing"), ""),
        "portal_dev_mailbox": settings.DEV_MAILBOX,
        "portal_memberships": [],
        "portal_platform_origin": platform_origin(request),
    }
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        # Lazy: evaluated only where the template shows the switcher.
        context["portal_memberships"] = portal_memberships(user=user)
    return context
