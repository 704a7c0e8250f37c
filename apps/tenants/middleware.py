"""Tenant resolution: the one place a request's schema is chosen (it replaces django-tenants' own).

- Portal: by host, `<slug>.<BASE_DOMAIN>` (or a custom domain).
- API: on the public host, by the API key in `Authorization: Bearer ...`, through the resolver
  named by `TENANT_API_KEY_RESOLVER`.
- Health probes never get here (apps.ops.middleware answers them first).

Nothing later in the request switches schemas.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import set_urlconf
from django.utils.module_loading import import_string

from apps.accounts.principals import Principal
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_for_host_cached, public_organization

ApiKeyResolver = Callable[[str], tuple[Organization, Principal] | None]

_REFUSALS: dict[str, tuple[int, str, str]] = {
    Organization.Status.SUSPENDED: (
        403,
        "organization_suspended",
        "This organization is suspended. Its owners can contact support to restore access.",
    ),
    Organization.Status.DELETING: (403, "organization_deleting", "This organization is being deleted."),
}


def _api_key_resolver() -> ApiKeyResolver | None:
    path = settings.TENANT_API_KEY_RESOLVER
    return import_string(path) if path else None


@cache
def _public_tenant() -> Organization:
    return public_organization()


def _wants_json(request: HttpRequest) -> bool:
    return request.path_info.startswith(("/api/", "/v1/")) or "application/json" in request.headers.get("Accept", "")


def _error(request: HttpRequest, status: int, code: str, message: str) -> HttpResponse:
    if _wants_json(request):
        # OpenAI's error shape, which every JSON error of the platform uses.
        error_type = "invalid_request_error" if status == 404 else "permission_error"
        return JsonResponse(
            {"error": {"message": message, "type": error_type, "param": None, "code": code}}, status=status
        )
    response = TemplateResponse(request, "tenants/unavailable.html", {"message": message}, status=status)
    response.render()
    return response


class TenantMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.public_hosts = {settings.BASE_DOMAIN, *settings.PUBLIC_HOSTS}

    def __call__(self, request: HttpRequest) -> HttpResponse:
        tenant_connection().set_schema_to_public()
        try:
            return self._handle(request)
        finally:
            tenant_connection().set_schema_to_public()

    def _handle(self, request: HttpRequest) -> HttpResponse:
        host = request.get_host().rsplit(":", 1)[0].lower()
        tenant: Organization | None
        if host in self.public_hosts:
            resolved = self._resolve_api_key(request)
            if resolved is None:
                tenant = _public_tenant()
            else:
                tenant, request.principal = resolved  # type: ignore[attr-defined]
        else:
            tenant = organization_for_host_cached(host)
            if tenant is None:
                return _error(request, 404, "organization_not_found", f"No organization is served at {host}.")

        refusal = _REFUSALS.get(tenant.status)
        if refusal is not None:
            return _error(request, *refusal)

        request.tenant = tenant  # type: ignore[attr-defined]
        tenant_connection().set_tenant(tenant)
        urlconf = settings.PUBLIC_SCHEMA_URLCONF if tenant.is_public else settings.ROOT_URLCONF
        request.urlconf = urlconf  # type: ignore[attr-defined]
        set_urlconf(urlconf)
        response = self.get_response(request)
        if tenant.status == Organization.Status.PAST_DUE:
            response["X-CognitionOS-Organization-Status"] = tenant.status
        return response

    def _resolve_api_key(self, request: HttpRequest) -> tuple[Organization, Principal] | None:
        resolver = _api_key_resolver()
        authorization = request.headers.get("Authorization", "")
        # Anthropic's clients send the key as x-api-key.
        key = authorization.removeprefix("Bearer ").strip() if authorization.startswith("Bearer ") else ""
        key = key or request.headers.get("X-Api-Key", "").strip()
        if resolver is None or not key:
            return None
        return resolver(key)
