"""The portal's Model settings page (issue 12): which models the organization's calls may use and
the policy for calls that name none, the semantic cache and its threshold, and the content policy
(whether prompts and answers are stored, and for how long). apps.llm's `llm_settings_set` changes
them (audited); the engine reads them from its per-process settings cache. Needs security:manage."""

from __future__ import annotations

import dataclasses

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, path
from django.views.decorators.cache import never_cache

from apps.accounts.principals import Principal
from apps.llm.calls import SettingsInvalid, chat_model_choices, llm_settings_get, llm_settings_set
from apps.portal.caller import caller_organization, caller_user
from apps.portal.settings_forms import ModelSettingsForm
from apps.rbac.decorators import member_permissions, permission_required
from apps.rbac.permissions import Permission


def _actor(request: HttpRequest) -> Principal:
    return dataclasses.replace(Principal.for_user(caller_user(request)), permissions=member_permissions(request))


@permission_required(Permission.SECURITY_MANAGE)
@never_cache
def model_settings(request: HttpRequest) -> HttpResponse:
    organization = caller_organization(request)
    current = llm_settings_get(organization=organization)
    # The models the organization can call now, and any it allows that it can't call at the moment
    # (a provider key removed), so that saving the page doesn't silently drop them.
    models = sorted({choice.name for choice in chat_model_choices(organization=organization)} | current.allowed_models)
    initial = {
        "allowed_models": sorted(current.allowed_models),
        "default_policy": current.default_policy,
        "semantic_cache": current.semantic_cache,
        "semantic_threshold": current.semantic_threshold,
        "store_content": current.store_content,
        "retention_days": current.retention_days,
    }
    form = ModelSettingsForm(request.POST or None, models=models, initial=initial)
    if request.method == "POST":
        if form.is_valid():
            try:
                llm_settings_set(organization=organization, actor=_actor(request), **form.cleaned_data)
            except SettingsInvalid as invalid:
                form.add_error(invalid.param if invalid.param in form.fields else None, str(invalid))
            else:
                messages.success(request, "Model settings saved: every call uses them within a few seconds.")
                return redirect("portal-model-settings")
        return _page(request, form, current_store_content=current.store_content, status=400)
    return _page(request, form, current_store_content=current.store_content)


def _page(
    request: HttpRequest, form: ModelSettingsForm, *, current_store_content: bool, status: int = 200
) -> HttpResponse:
    return render(
        request,
        "portal/model_settings/model_settings.html",
        {
            "organization": caller_organization(request),
            "form": form,
            "store_content": current_store_content,
            "policy_fields": [form["allowed_models"], form["default_policy"]],
            "cache_fields": [form["semantic_cache"], form["semantic_threshold"]],
            "content_fields": [form["store_content"], form["retention_days"]],
        },
        status=status,
    )


urlpatterns: list[URLPattern] = [
    path("settings/models/", model_settings, name="portal-model-settings"),
]
