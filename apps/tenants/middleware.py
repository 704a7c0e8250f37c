"""Tenant resolution: the one place a request's schema is chosen (it replaces django-tenants' own).

- Portal: by host, `<slug>.<BASE_DOMAIN>` (or a custom domain).
- API: on the public host, by the API key in `Authorization: Bearer ...`, through the resolver
  named by `TENANT_API_KEY_RESOLVER`, which also limits failed attempts per client address.
- Health probes never get here (apps.ops.middleware answers them first).

Nothing later in the request switches schemas.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Protocol

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.request import split_domain_port
from django.template.response import TemplateResponse
from django.urls import set_urlconf
from django.utils.module_loading import import_string

from apps.accounts.principals import Principal
from apps.tenants.connection import tenant_connection
from apps.tenants.errors import ApiKeyAttemptsExceeded
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_for_host_cached, public_organization


class ApiKeyResolver(Protocol):
    """`TENANT_API_KEY_RESOLVER`: the organization and principal of a key, None if it resolves to
    nothing, or ApiKeyAttemptsExceeded when the client address has failed too often."""

    def __call__(self, raw_key: str, *, client_address: str) -> tuple[Organization, Principal] | None: ...


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


def client_address(request: HttpRequest) -> str:
    """The address a request came from: REMOTE_ADDR, or with TRUSTED_PROXY_COUNT proxies in front,
    the address the outermost of them appended to X-Forwarded-For. Entries further left are what
    the client chose to send, so they are never used."""
    remote: str = request.META.get("REMOTE_ADDR", "")
    hops: int = settings.TRUSTED_PROXY_COUNT
    if hops <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [part for part in forwarded if part]
    return forwarded[-hops] if len(forwarded) >= hops else remote


def _wants_json(request: HttpRequest) -> bool:
    return request.path_info.startswith(("/api/", "/v1/")) or "application/json" in request.headers.get("Accept", "")


_ERROR_TYPES = {404: "invalid_request_error", 429: "rate_limit_error"}


def _error(
    request: HttpRequest, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> HttpResponse:
    response: HttpResponse
    error_type = _ERROR_TYPES.get(status, "permission_error")
    if request.path_info.startswith("/v1/messages"):
        # Anthropic's clients read Anthropic's error shape on its endpoint.
        response = JsonResponse({"type": "error", "error": {"type": error_type, "message": message}}, status=status)
    elif _wants_json(request):
        # OpenAI's error shape, which every other JSON error of the platform uses.
        response = JsonResponse(
            {"error": {"message": message, "type": error_type, "param": None, "code": code}}, status=status
        )
    else:
        response = TemplateResponse(request, "tenants/unavailable.html", {"message": message}, status=status)
        response.render()
    for name, value in (headers or {}).items():
        response[name] = value
    return response


class TenantMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.public_hosts = {settings.BASE_DOMAIN.lower(), *(host.lower() for host in settings.PUBLIC_HOSTS)}

    def __call__(self, request: HttpRequest) -> HttpResponse:
        tenant_connection().set_schema_to_public()
        try:
            return self._handle(request)
        finally:
            tenant_connection().set_schema_to_public()

    def _handle(self, request: HttpRequest) -> HttpResponse:
        # `[::1]:8000` is host `[::1]`: split as Django validates it, not at the last colon.
        host, _port = split_domain_port(request.get_host())
        tenant: Organization | None
        if host in self.public_hosts:
            try:
                resolved = self._resolve_api_key(request)
            except ApiKeyAttemptsExceeded as exceeded:
                return _error(
                    request,
                    429,
                    "rate_limit_exceeded",
                    str(exceeded),
                    headers={"Retry-After": str(exceeded.retry_after_s)},
                )
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
        # From the environ: request.headers would build a copy of every header on every request.
        authorization = request.META.get("HTTP_AUTHORIZATION", "")
        # Anthropic's clients send the key as x-api-key.
        key = authorization.removeprefix("Bearer ").strip() if authorization.startswith("Bearer ") else ""
        key = key or request.META.get("HTTP_X_API_KEY", "").strip()
        if resolver is None or not key:
            return None
        return resolver(key, client_address=client_address(request))
