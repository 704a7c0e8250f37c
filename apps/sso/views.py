"""SAML endpoints on an organization's host: thin wrappers over allauth's SAML views.

/accounts/saml/<slug>/login/    allauth's (a POST starts the sign-in at the IdP), once SSO is usable
/accounts/saml/<slug>/acs/      the IdP's POST: size bounded before anything reads it, then allauth's
/accounts/saml/<slug>/acs/finish/  ours: python3-saml's strict checks plus ours (saml.py), then
                                   allauth completes the sign-in
/accounts/saml/<slug>/metadata/ our SP metadata, from allauth's config minus single logout (?download=1: a file)
/accounts/saml/<slug>/sls/      not offered (single logout)

Every refused response is recorded in the organization's audit log ("sso.login_refused" with the
reason) and the person gets a page that says what happened, without the response's content.
"""

from __future__ import annotations

import logging

from allauth.account.adapter import get_adapter as get_account_adapter
from allauth.core.internal import httpkit
from allauth.socialaccount.adapter import get_adapter
from allauth.socialaccount.helpers import complete_social_login
from allauth.socialaccount.providers.base.constants import AuthProcess
from allauth.socialaccount.providers.saml import views as allauth_saml
from allauth.socialaccount.sessions import LoginSession
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.billing.selectors import entitlement
from apps.sso.adapter import SSO_USER_STATE_KEY, host_organization
from apps.sso.models import IdentityProvider
from apps.sso.saml import (
    SamlRefused,
    assertion_claim,
    refusal_audit_allowed,
    response_size_check,
    safe_next,
    saml_response_validate,
    sp_metadata,
)
from apps.sso.services import sso_login_complete, sso_login_refused_record
from apps.tenants.models import Organization

logger = logging.getLogger(__name__)


def refusal_response(
    request: HttpRequest, refused: SamlRefused, organization: Organization | None = None
) -> HttpResponse:
    response = render(
        request,
        "sso/refused.html",
        {"reason": refused.reason, "message": refused.message, "organization": organization},
        status=refused.status,
    )
    response["Cache-Control"] = "no-store"
    return response


def _client(request: HttpRequest) -> dict[str, str]:
    return {"ip": get_account_adapter().get_client_ip(request) or "", "host": request.get_host()}


def _organization_idp(request: HttpRequest, organization_slug: str) -> tuple[Organization, IdentityProvider]:
    """This host's organization and its IdP; 404 for another organization's slug (or none here)."""
    organization = host_organization(request)
    if organization is None or organization.slug != organization_slug:
        raise Http404("No single sign-on here.")
    idp = IdentityProvider.objects.filter(organization_id=organization.pk).first()
    if idp is None:
        raise Http404("This organization has no single sign-on.")
    return organization, idp


def _usable(organization: Organization, idp: IdentityProvider) -> None:
    if not entitlement(organization, "sso").allowed:
        raise SamlRefused("plan_without_sso")
    if not idp.enabled:
        raise SamlRefused("sso_disabled")


def _refuse(request: HttpRequest, organization: Organization, refused: SamlRefused) -> HttpResponse:
    if refusal_audit_allowed(organization=organization):
        sso_login_refused_record(organization=organization, refused=refused, client=_client(request))
    else:
        logger.warning(
            "sso.login_refused not audited (over SSO_REFUSALS_AUDITED_PER_MINUTE)",
            extra={"organization": organization.slug, "reason": refused.reason},
        )
    return refusal_response(request, refused, organization)


@never_cache
@require_http_methods(["GET", "POST"])
def login(request: HttpRequest, organization_slug: str) -> HttpResponse:
    organization, idp = _organization_idp(request, organization_slug)
    try:
        _usable(organization, idp)
    except SamlRefused as refused:
        # Nothing from the IdP yet: a page, no audit event (anyone can open this URL).
        return refusal_response(request, refused, organization)
    response: HttpResponse = allauth_saml.login(request, organization_slug=organization_slug)
    return response


@csrf_exempt  # the IdP's POST: the response's signature and our state are the checks
@never_cache
@require_POST
def acs(request: HttpRequest, organization_slug: str) -> HttpResponse:
    organization, idp = _organization_idp(request, organization_slug)
    try:
        response_size_check(request)  # before request.POST reads the body
        _usable(organization, idp)
    except SamlRefused as refused:
        return _refuse(request, organization, refused)
    # allauth keeps the POST in a session of its own and redirects to acs/finish/: the browser
    # sends this host's (SameSite=Lax) session cookie on that GET, not on the IdP's cross-site POST.
    response: HttpResponse = allauth_saml.acs(request, organization_slug=organization_slug)
    return response


@never_cache
@require_GET
def acs_finish(request: HttpRequest, organization_slug: str) -> HttpResponse:
    organization, idp = _organization_idp(request, organization_slug)
    acs_session = LoginSession(request, "saml_acs_session", "saml-acs-session")
    stored = acs_session.store.get("request")
    acs_session.delete()
    if not stored:
        # A reload of this page or a stray link: no response to judge, nothing to record.
        return refusal_response(request, SamlRefused("missing_response"), organization)
    acs_request = httpkit.deserialize_request(stored, HttpRequest())
    app = get_adapter().get_app(request, provider="saml", client_id=organization_slug)
    provider = app.get_provider(request)
    try:
        _usable(organization, idp)
        assertion = saml_response_validate(
            acs_request=acs_request, app_settings=app.settings, slug=organization_slug, idp=idp
        )
        assertion_claim(organization=organization, assertion=assertion)
        if assertion.in_response_to:
            # SP-initiated: it must answer a request this browser's session made (allauth's state).
            try:
                state = provider.unstash_redirect_state(request, assertion.in_response_to)
            except PermissionDenied as exc:
                raise SamlRefused("unknown_request") from exc
            next_url = safe_next(request, state.get("next"))
        else:
            if not idp.allow_idp_initiated:
                raise SamlRefused("idp_initiated_disabled")
            state = {}
            next_url = safe_next(request, acs_request.POST.get("RelayState"))
        sociallogin = provider.sociallogin_from_response(request, assertion.auth)
        email = (getattr(sociallogin.user, "email", "") or "").strip().lower()
        user = sso_login_complete(
            organization=organization,
            idp=idp,
            email=email,
            client=_client(request),
            assertion_id=assertion.assertion_id,
            authn_contexts=assertion.authn_contexts,
        )
    except SamlRefused as refused:
        return _refuse(request, organization, refused)
    # Always a sign-in (never "connect" to whoever is signed in here), landing where it was asked
    # to if that is one of our hosts, else on the organization's home (LOGIN_REDIRECT_URL).
    state = {key: value for key, value in state.items() if key not in ("next", "process")}
    state["process"] = AuthProcess.LOGIN
    if next_url:
        state["next"] = next_url
    state[SSO_USER_STATE_KEY] = user.pk
    sociallogin.state = state
    response: HttpResponse = complete_social_login(request, sociallogin)
    return response


@never_cache
@require_GET
def metadata(request: HttpRequest, organization_slug: str) -> HttpResponse:
    organization, idp = _organization_idp(request, organization_slug)
    if not entitlement(organization, "sso").allowed:
        return refusal_response(request, SamlRefused("plan_without_sso"), organization)
    app = get_adapter().get_app(request, provider="saml", client_id=organization_slug)
    body = sp_metadata(request=request, app_settings=app.settings, slug=organization_slug, idp=idp)
    response = HttpResponse(body, content_type="text/xml; charset=utf-8")
    if request.GET.get("download"):
        response["Content-Disposition"] = f'attachment; filename="cognitionos-{organization.slug}-sp-metadata.xml"'
    return response


@require_http_methods(["GET", "POST"])
def sls(request: HttpRequest, organization_slug: str) -> HttpResponse:
    raise Http404("Single logout is not offered.")
