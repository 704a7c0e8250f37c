"""The portal's Provider keys page (issue 12): the organization's own OpenAI, Anthropic and
OpenAI-compatible keys (bring your own key). Add, replace (rotate), remove, and a test call that
says whether a key works. A key is stored encrypted by apps.llm's services and never shown again
(only its last four characters); the form's field is a password input, never filled back in.
Needs security:manage, as the navigation says (the permission for the organization's secrets)."""

from __future__ import annotations

import dataclasses

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from apps.accounts.principals import Principal
from apps.llm.calls import (
    OWN_KEY_PROVIDERS,
    KeyCheck,
    ProviderCredentialInvalid,
    provider_credential_delete,
    provider_credential_set,
    provider_credential_test,
)
from apps.llm.models import ProviderCredential
from apps.portal.caller import caller_organization, caller_user
from apps.portal.settings_forms import PROVIDER_LABELS, ProviderKeyForm
from apps.rbac.decorators import member_permissions, permission_required
from apps.rbac.permissions import Permission


def _actor(request: HttpRequest) -> Principal:
    return dataclasses.replace(Principal.for_user(caller_user(request)), permissions=member_permissions(request))


def _credentials() -> list[ProviderCredential]:
    # The connection is on the organization's schema; the sealed key is never read here.
    return list(ProviderCredential.objects.defer("nonce", "ciphertext").order_by("provider"))


def _page(
    request: HttpRequest, form: ProviderKeyForm, *, status: int = 200, tested: dict[str, KeyCheck] | None = None
) -> HttpResponse:
    credentials = _credentials()
    return render(
        request,
        "portal/provider_keys/provider_keys.html",
        {
            "organization": caller_organization(request),
            "rows": [
                (c, PROVIDER_LABELS.get(c.provider, c.provider), (tested or {}).get(c.provider)) for c in credentials
            ],
            "form": form,
            "labels": PROVIDER_LABELS,
        },
        status=status,
    )


@permission_required(Permission.SECURITY_MANAGE)
@never_cache
def provider_keys(request: HttpRequest) -> HttpResponse:
    """The organization's own keys, and the form that adds one or replaces the provider's key."""
    if request.method != "POST":
        return _page(request, ProviderKeyForm())
    form = ProviderKeyForm(request.POST)
    if form.is_valid():
        try:
            provider_credential_set(
                organization=caller_organization(request),
                provider=form.cleaned_data["provider"],
                api_key=form.cleaned_data["api_key"],
                base_url=form.cleaned_data["base_url"],
                actor=_actor(request),
            )
        except ProviderCredentialInvalid as invalid:
            form.add_error(invalid.param if invalid.param in form.fields else None, str(invalid))
        else:
            provider = form.cleaned_data["provider"]
            messages.success(request, _SAVED.get(provider, f"{PROVIDER_LABELS[provider]} key saved (encrypted)."))
            return redirect("portal-provider-keys")
    return _page(request, form, status=400)


_SAVED = {
    "openai": "OpenAI key saved (encrypted). Calls to OpenAI models now use it.",
    "anthropic": "Anthropic key saved (encrypted). Calls to Anthropic models now use it.",
    # An own compatible key is sent only to the server it was stored for (apps.llm.providers.own_key_name).
    "openai_compatible": "OpenAI-compatible key saved (encrypted). Calls to the platform's models served at "
    "this URL now use it.",
}


def _credential_or_404(provider: str) -> None:
    if provider not in OWN_KEY_PROVIDERS or not ProviderCredential.objects.filter(provider=provider).exists():
        raise Http404("no key for this provider")


@permission_required({"POST": Permission.SECURITY_MANAGE})
@require_POST
def provider_key_remove(request: HttpRequest, provider: str) -> HttpResponse:
    _credential_or_404(provider)
    provider_credential_delete(organization=caller_organization(request), provider=provider, actor=_actor(request))
    messages.success(request, f"{PROVIDER_LABELS[provider]} key removed: calls use the platform's key again.")
    return redirect("portal-provider-keys")


@permission_required({"POST": Permission.SECURITY_MANAGE})
@require_POST
def provider_key_test(request: HttpRequest, provider: str) -> HttpResponse:
    """One small real call with the stored key; with HTMX the answer replaces the key's result only."""
    _credential_or_404(provider)
    result = provider_credential_test(
        organization=caller_organization(request), provider=provider, actor=_actor(request)
    )
    if request.headers.get("HX-Request") == "true":
        # 200 even when limited: HTMX swaps in only successful answers, and this one says why.
        return render(
            request, "portal/provider_keys/_test_result.html", {"result": result, "label": PROVIDER_LABELS[provider]}
        )
    return _page(
        request, ProviderKeyForm(), tested={provider: result}, status=429 if result == KeyCheck.LIMITED else 200
    )


urlpatterns: list[URLPattern] = [
    path("settings/providers/", provider_keys, name="portal-provider-keys"),
    path("settings/providers/<slug:provider>/remove/", provider_key_remove, name="portal-provider-key-remove"),
    path("settings/providers/<slug:provider>/test/", provider_key_test, name="portal-provider-key-test"),
]
