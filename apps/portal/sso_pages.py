"""The portal's SSO pages: "Sign in with SSO" (an organization found by the email's verified
domain), and an organization's single sign-on settings (identity provider, verified domains)."""

from __future__ import annotations

from typing import Any

from allauth.core import ratelimit
from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.http.request import split_domain_port
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from apps.accounts.principals import Principal
from apps.billing.selectors import entitlement
from apps.portal.caller import caller_organization, caller_user
from apps.portal.handover import organization_host
from apps.rbac.decorators import member_permissions, permission_required
from apps.rbac.models import Role
from apps.rbac.permissions import Permission
from apps.sso.domains import email_domain, verification_record_name, verification_record_value
from apps.sso.models import IdentityProvider, SsoDomain
from apps.sso.saml import sp_urls
from apps.sso.selectors import sso_discover, sso_domain_list, sso_enabled_provider
from apps.sso.services import (
    IdentityProviderRefused,
    SsoDomainRefused,
    identity_provider_configure,
    identity_provider_delete,
    sso_domain_add,
    sso_domain_remove,
    sso_domain_require,
    sso_domain_verify_dns,
)
from apps.tenants.models import Organization

_MANAGE = {"GET": Permission.SECURITY_MANAGE, "POST": Permission.SECURITY_MANAGE}
_POST_ONLY = {"POST": Permission.SECURITY_MANAGE}
METADATA_XML_MAX_CHARS = 256 * 1024


# --- Sign in with SSO ------------------------------------------------------------------------------


class SsoSigninForm(forms.Form):
    email = forms.EmailField(
        label="Work email",
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autocapitalize": "none", "spellcheck": "false"}),
        help_text="We find your organization's identity provider from your address's domain.",
    )


def _origin(request: HttpRequest, host: str) -> str:
    _host, port = split_domain_port(request.get_host())
    default_port = "443" if request.is_secure() else "80"
    suffix = f":{port}" if port and port != default_port else ""
    return f"{request.scheme}://{host}{suffix}"


def sso_login_url(request: HttpRequest, organization: Organization) -> str:
    """The organization's SAML sign-in, on its own host (sessions are per host)."""
    path = reverse("sso-saml-login", kwargs={"organization_slug": organization.slug})
    return _origin(request, organization_host(organization)) + path


@never_cache
def sso_signin(request: HttpRequest) -> HttpResponse:
    """Anyone: type an email, go to the sign-in of the organization that verified its domain.

    The answer depends only on the address's own domain (has it SSO or not), never names another
    organization, and counts against allauth's sign-in rate per client address."""
    host_organization = caller_organization(request)
    host_provider = None if host_organization.is_public else sso_enabled_provider(organization=host_organization)
    status = 200
    if request.method == "POST":
        form = SsoSigninForm(request.POST)
        if not ratelimit.consume(request, action="login"):
            form.is_valid()
            form.add_error(None, "Too many attempts from your network. Wait a minute and try again.")
            status = 429
        elif form.is_valid():
            provider = sso_discover(email=form.cleaned_data["email"])
            if provider is not None:
                return HttpResponseRedirect(sso_login_url(request, provider.organization))
            domain = email_domain(form.cleaned_data["email"]) or ""
            form.add_error(
                "email",
                f"Single sign-on isn't set up for {domain} addresses. Sign in with your password, "
                "or ask your administrator whether your organization uses SSO.",
            )
        else:
            status = 400
    elif request.method == "GET":
        form = SsoSigninForm(initial={"email": request.GET.get("email", "")[:254]})
    else:
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})
    return render(
        request,
        "portal/sso_signin.html",
        {
            "form": form,
            "host_organization": None if host_organization.is_public else host_organization,
            "host_sso_url": sso_login_url(request, host_organization) if host_provider is not None else None,
        },
        status=status,
    )


# --- The organization's single sign-on settings --------------------------------------------------------


class IdentityProviderForm(forms.Form):
    metadata_xml = forms.CharField(
        label="Identity provider metadata (XML)",
        required=False,
        max_length=METADATA_XML_MAX_CHARS,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false", "class": "mono"}),
        help_text="Paste the SAML metadata your identity provider offers for this application "
        "(it starts with &lt;EntityDescriptor&gt;).",
    )
    metadata_url = forms.URLField(
        label="…or the metadata's URL",
        required=False,
        max_length=2048,
        assume_scheme="https",
        help_text="An https address we fetch the metadata from. Leave both empty to keep the current metadata.",
    )
    enabled = forms.BooleanField(label="Members can sign in through this identity provider", required=False)
    allow_idp_initiated = forms.BooleanField(
        label="Accept sign-ins started from the identity provider's own portal (IdP-initiated)",
        required=False,
        help_text="Off unless you need it: a sign-in started here is tied to this browser, one started at the "
        "identity provider is not.",
    )
    default_role = forms.ChoiceField(
        label="Role of people who join through SSO",
        choices=[(value, label) for value, label in Role.choices if value != Role.OWNER],
        initial=Role.VIEWER,
        help_text="Someone who signs in through SSO and isn't a member yet becomes one with this role.",
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("metadata_xml") and cleaned.get("metadata_url"):
            raise forms.ValidationError("Give the metadata XML or its URL, not both.")
        return cleaned


class DomainAddForm(forms.Form):
    domain = forms.CharField(
        label="Email domain",
        max_length=253,
        widget=forms.TextInput(attrs={"placeholder": "example.com", "autocapitalize": "none", "spellcheck": "false"}),
        help_text="The part of your members' addresses after the @. You'll publish a DNS record to prove it's yours.",
    )


def _actor(request: HttpRequest) -> Principal:
    user = caller_user(request)
    return Principal(
        kind="operator" if user.is_staff else "user",
        id=str(user.pk),
        label=user.email,
        permissions=member_permissions(request),
    )


def _plan_has_sso(organization: Organization) -> bool:
    return entitlement(organization, "sso").allowed


def _render_settings(
    request: HttpRequest,
    *,
    idp_form: IdentityProviderForm | None = None,
    domain_form: DomainAddForm | None = None,
    domain_error: tuple[int, str] | None = None,
    status: int = 200,
) -> HttpResponse:
    organization = caller_organization(request)
    has_sso = _plan_has_sso(organization)
    idp = IdentityProvider.objects.filter(organization_id=organization.pk).first()
    if idp_form is None and has_sso:
        idp_form = IdentityProviderForm(
            initial={
                "enabled": idp.enabled if idp else True,
                "allow_idp_initiated": idp.allow_idp_initiated if idp else False,
                "default_role": idp.default_role if idp else Role.VIEWER,
                "metadata_url": idp.metadata_url if idp else "",
            }
        )
    domains = [
        _domain_item(row, error=domain_error[1] if domain_error and domain_error[0] == row.pk else None)
        for row in sso_domain_list(organization=organization)
    ]
    return render(
        request,
        "portal/sso_settings.html",
        {
            "organization": organization,
            "has_sso": has_sso,
            "idp": idp,
            "sp": sp_urls(request=request, organization=organization),
            "idp_form": idp_form,
            "domain_form": domain_form or (DomainAddForm() if has_sso else None),
            "domains": domains,
        },
        status=status,
    )


def _domain_item(row: SsoDomain, *, error: str | None = None, notice: str | None = None) -> dict[str, Any]:
    return {
        "row": row,
        "record_name": verification_record_name(row.domain),
        "record_value": verification_record_value(row.verification_token),
        "error": error,
        "notice": notice,
    }


def _domain_card(
    request: HttpRequest, domain_id: int, *, error: str | None = None, notice: str | None = None
) -> HttpResponse:
    """HTMX: the domain's card, answered in place (200 also for a refusal, which the card shows)."""
    row = sso_domain_list(organization=caller_organization(request)).filter(pk=domain_id).first()
    if row is None:
        return HttpResponse("")
    return render(request, "portal/sso_domain.html", {"item": _domain_item(row, error=error, notice=notice)})


def _require_plan(request: HttpRequest) -> Organization:
    organization = caller_organization(request)
    if not _plan_has_sso(organization):
        raise PermissionDenied("your plan doesn't include SSO")
    return organization


def _sentence(text: str) -> str:
    """A service's refusal as a sentence; one that starts with a domain name keeps it as typed."""
    first = text.split(" ", 1)[0]
    if "." not in first:
        text = text[:1].upper() + text[1:]
    return text.rstrip(".") + "."


def _refusal_status(code: str) -> int:
    if code in ("permission_denied", "plan_without_sso"):
        return 403
    if code == "not_found":
        return 404
    if code == "rate_limited":
        return 429
    if code == "dns_unreachable":
        return 503
    return 400


@never_cache
@permission_required(_MANAGE)
def sso_settings(request: HttpRequest) -> HttpResponse:
    """GET: the page. POST: configure the identity provider."""
    if request.method != "POST":
        return _render_settings(request)
    form = IdentityProviderForm(request.POST)
    if not form.is_valid():
        return _render_settings(request, idp_form=form, status=400)
    organization = _require_plan(request)
    data = form.cleaned_data
    try:
        identity_provider_configure(
            organization=organization,
            actor=_actor(request),
            metadata_xml=data["metadata_xml"] or None,
            metadata_url=data["metadata_url"] or None,
            enabled=bool(data["enabled"]),
            allow_idp_initiated=bool(data["allow_idp_initiated"]),
            default_role=data["default_role"],
        )
    except IdentityProviderRefused as refused:
        if refused.code == "permission_denied":
            raise PermissionDenied(str(refused)) from refused
        form.add_error(None, _sentence(str(refused)))
        return _render_settings(request, idp_form=form, status=_refusal_status(refused.code))
    messages.success(request, "Identity provider saved.")
    return redirect(reverse("portal-sso") + "#idp-heading")


@never_cache
@permission_required(_POST_ONLY)
@require_POST
def sso_idp_delete(request: HttpRequest) -> HttpResponse:
    if not IdentityProvider.objects.filter(organization_id=caller_organization(request).pk).exists():
        raise Http404("No identity provider to remove.")
    organization = _require_plan(request)
    try:
        identity_provider_delete(organization=organization, actor=_actor(request))
    except IdentityProviderRefused as refused:
        if refused.code == "permission_denied":
            raise PermissionDenied(str(refused)) from refused
        messages.error(request, _sentence(str(refused)))
        return redirect("portal-sso")
    messages.success(request, "Identity provider removed: nobody signs in through it any more.")
    return redirect("portal-sso")


@never_cache
@permission_required(_POST_ONLY)
@require_POST
def sso_domain_add_page(request: HttpRequest) -> HttpResponse:
    form = DomainAddForm(request.POST)
    if not form.is_valid():
        return _render_settings(request, domain_form=form, status=400)
    organization = _require_plan(request)
    try:
        row = sso_domain_add(organization=organization, actor=_actor(request), domain=form.cleaned_data["domain"])
    except SsoDomainRefused as refused:
        if refused.code == "permission_denied":
            raise PermissionDenied(str(refused)) from refused
        form.add_error("domain", _sentence(str(refused)))
        return _render_settings(request, domain_form=form, status=_refusal_status(refused.code))
    messages.success(request, f"{row.domain} added. Publish its DNS record, then select “Verify”.")
    return redirect(reverse("portal-sso") + f"#domain-{row.pk}")


def _domain_action(request: HttpRequest, domain_id: int, action: str) -> HttpResponse:
    organization = _require_plan(request)
    actor = _actor(request)
    htmx = bool(getattr(request, "htmx", False))
    try:
        if action == "verify":
            row = sso_domain_verify_dns(organization=organization, actor=actor, domain_id=domain_id)
            message = f"{row.domain} is verified."
        elif action == "remove":
            removed = sso_domain_list(organization=organization).filter(pk=domain_id).first()
            sso_domain_remove(organization=organization, actor=actor, domain_id=domain_id)
            message = f"{removed.domain if removed else 'The domain'} removed."
        else:
            required = request.POST.get("required") == "1"
            row = sso_domain_require(organization=organization, actor=actor, domain_id=domain_id, required=required)
            message = (
                f"Members with {row.domain} addresses now sign in only through SSO."
                if required
                else f"{row.domain} addresses may sign in with a password or passkey again."
            )
    except SsoDomainRefused as refused:
        if refused.code == "permission_denied":
            raise PermissionDenied(str(refused)) from refused
        if refused.code == "not_found":
            raise Http404("No such domain in this organization.") from refused
        text = _sentence(str(refused))
        if htmx:
            return _domain_card(request, domain_id, error=text)
        return _render_settings(request, domain_error=(domain_id, text), status=_refusal_status(refused.code))
    if htmx:
        if action == "remove":
            return render(request, "portal/sso_domain_removed.html", {"message": message})
        return _domain_card(request, domain_id, notice=message)
    messages.success(request, message)
    return redirect(reverse("portal-sso") + ("" if action == "remove" else f"#domain-{domain_id}"))


@never_cache
@permission_required(_POST_ONLY)
@require_POST
def sso_domain_verify_page(request: HttpRequest, domain_id: int) -> HttpResponse:
    return _domain_action(request, domain_id, "verify")


@never_cache
@permission_required(_POST_ONLY)
@require_POST
def sso_domain_remove_page(request: HttpRequest, domain_id: int) -> HttpResponse:
    return _domain_action(request, domain_id, "remove")


@never_cache
@permission_required(_POST_ONLY)
@require_POST
def sso_domain_require_page(request: HttpRequest, domain_id: int) -> HttpResponse:
    return _domain_action(request, domain_id, "require")
