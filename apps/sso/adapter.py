"""allauth's social-account hooks for SAML SSO.

One SAML app per organization, built on each request from the organization's IdentityProvider row
(no SocialApp rows to keep in sync), and only on that organization's own host: the slug in
/accounts/saml/<slug>/... must be the host's organization, so org A's app never answers on org B's
host or on the platform host.
"""

from __future__ import annotations

from typing import Any

from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.socialaccount.models import SocialAccount, SocialApp, SocialLogin
from django.db import IntegrityError, transaction
from django.http import HttpRequest

from apps.accounts.models import User
from apps.sso.models import IdentityProvider
from apps.sso.saml import SamlRefused, provider_sub_id, saml_app_settings
from apps.tenants.models import Organization

# Set on the SocialLogin's state by the ACS view once the assertion and the person were accepted.
SSO_USER_STATE_KEY = "sso_user_id"


def host_organization(request: HttpRequest | None) -> Organization | None:
    tenant = getattr(request, "tenant", None) if request is not None else None
    if not isinstance(tenant, Organization) or tenant.is_public:
        return None
    return tenant


def host_identity_provider(request: HttpRequest | None) -> IdentityProvider | None:
    organization = host_organization(request)
    if organization is None:
        return None
    return IdentityProvider.objects.filter(organization_id=organization.pk).first()


def saml_app_for(organization: Organization, idp: IdentityProvider) -> SocialApp:
    """The (unsaved) allauth app of an organization's IdP."""
    return SocialApp(
        provider="saml",
        provider_id=provider_sub_id(organization),
        client_id=organization.slug,
        name=organization.name,
        settings=saml_app_settings(idp=idp),
    )


class SsoSocialAccountAdapter(DefaultSocialAccountAdapter):
    def list_apps(
        self, request: HttpRequest | None, provider: str | None = None, client_id: str | None = None
    ) -> list[SocialApp]:
        organization = host_organization(request)
        if organization is None:
            return []
        if provider not in (None, "saml", provider_sub_id(organization)):
            return []
        if client_id not in (None, organization.slug):
            return []
        idp = IdentityProvider.objects.filter(organization_id=organization.pk).first()
        if idp is None or not idp.certificates:
            return []
        return [saml_app_for(organization, idp)]

    def is_open_for_signup(self, request: HttpRequest, sociallogin: SocialLogin) -> bool:
        # Accounts of SSO are made by the ACS view (sso_login_complete), never by allauth's social
        # sign-up form.
        return False

    def pre_social_login(self, request: HttpRequest, sociallogin: SocialLogin) -> None:
        """Link the IdP's account to the person the ACS view accepted (by their verified address)."""
        user_id = sociallogin.state.get(SSO_USER_STATE_KEY)
        if user_id is None:
            # Only the ACS view completes SAML sign-ins, and it always sets the person.
            raise ImmediateHttpResponse(_refusal_page(request, SamlRefused("invalid", "no accepted person")))
        user = User.objects.get(pk=user_id)
        if sociallogin.is_existing:
            account = sociallogin.account
            if account.user_id != user.pk:
                # The IdP's subject was linked to another address before (the person's address
                # changed at the IdP): the address, which the domain check vouches for, decides.
                account.user = user
                account.save(update_fields=["user"])
                sociallogin.user = user
            return
        try:
            with transaction.atomic():  # a savepoint
                sociallogin.connect(request, user)
        except IntegrityError:
            # A parallel first sign-in of the same subject (two tabs) linked it a moment ago.
            account = SocialAccount.objects.get(provider=sociallogin.account.provider, uid=sociallogin.account.uid)
            if account.user_id != user.pk:
                account.user = user
                account.save(update_fields=["user"])
            sociallogin.account = account
            sociallogin.user = user

    def on_authentication_error(
        self,
        request: HttpRequest,
        provider: Any,
        error: Any = None,
        exception: Any = None,
        extra_context: Any = None,
    ) -> None:
        # allauth's own error page shows python3-saml's reason; ours says what to do, echoes nothing.
        raise ImmediateHttpResponse(_refusal_page(request, SamlRefused("invalid", str(error or ""))))


def _refusal_page(request: HttpRequest, refused: SamlRefused) -> Any:
    from apps.sso.views import refusal_response

    return refusal_response(request, refused)
