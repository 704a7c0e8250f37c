"""The organization's Security settings page: require a second factor of every member."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.accounts.selectors import organization_mfa_summary, user_has_mfa
from apps.rbac.decorators import member_permissions, permission_required
from apps.rbac.permissions import Permission
from apps.tenants.models import Organization
from apps.tenants.services import OrganizationChangeRefused, organization_mfa_require_set


class SecurityForm(forms.Form):
    mfa_required = forms.BooleanField(
        required=False,
        label="Require two-factor authentication for all members",
        help_text="Members without a second factor are asked to set one up before they can use the portal; "
        "their sessions in the API get 403 mfa_required. API keys keep working.",
    )


@never_cache
@permission_required({"GET": Permission.SECURITY_MANAGE, "POST": Permission.SECURITY_MANAGE})
def security(request: HttpRequest) -> HttpResponse:
    organization: Organization = request.tenant  # type: ignore[attr-defined]
    user = request.user
    assert isinstance(user, User)
    if request.method == "POST":
        form = SecurityForm(request.POST)
        if form.is_valid():
            required = bool(form.cleaned_data["mfa_required"])
            actor = Principal(
                kind="operator" if user.is_staff else "user",
                id=str(user.pk),
                label=user.email,
                permissions=member_permissions(request),
            )
            try:
                organization_mfa_require_set(organization=organization, required=required, actor=actor)
            except OrganizationChangeRefused as refused:
                if refused.code == "permission_denied":
                    raise PermissionDenied(str(refused)) from refused
                form.add_error(None, str(refused).capitalize() + ".")
            else:
                messages.success(
                    request,
                    "Two-factor authentication is now required for all members."
                    if required
                    else "Two-factor authentication is no longer required.",
                )
                return redirect("portal-security")
    else:
        form = SecurityForm(initial={"mfa_required": organization.mfa_required})
    return render(
        request,
        "portal/security.html",
        {
            "organization": organization,
            "form": form,
            "own_mfa": user_has_mfa(user_id=user.pk),
            "summary": organization_mfa_summary(organization_id=organization.pk),
        },
    )
