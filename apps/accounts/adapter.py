"""allauth's hooks."""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.authentication import get_authentication_records
from allauth.account.internal.stagekit import clear_login
from allauth.account.models import EmailAddress
from allauth.mfa.adapter import DefaultMFAAdapter
from allauth.mfa.models import Authenticator
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from apps.accounts.selectors import MFA_FACTOR_TYPES
from apps.sso.selectors import sso_provider_id, sso_required_for, sso_required_for_emails
from apps.tenants.models import Organization

SSO_REQUIRED_MESSAGE = (
    "Your organization requires single sign-on for this address: use “Sign in with SSO” instead of a "
    "password or passkey."
)


class AccountAdapter(DefaultAccountAdapter):
    error_messages = {**DefaultAccountAdapter.error_messages, "sso_required": SSO_REQUIRED_MESSAGE}

    def is_open_for_signup(self, request: HttpRequest) -> bool:
        # Anyone may create an account and a first organization; invitations come later.
        return True

    def authenticate(self, request: HttpRequest, **credentials: Any) -> AbstractBaseUser | None:
        # A sign-in with a password for an address whose verified domain requires SSO is refused
        # before the password is even checked. (Reauthenticating an existing session is not a sign-in.)
        email = credentials.get("email")
        user = getattr(request, "user", None)
        signing_in = user is None or not user.is_authenticated
        if signing_in and isinstance(email, str) and sso_required_for(email=email) is not None:
            raise self.validation_error("sso_required")
        user_found: AbstractBaseUser | None = super().authenticate(request, **credentials)
        return user_found

    def pre_login(self, request: HttpRequest, user: AbstractBaseUser, **kwargs: Any) -> HttpResponse | None:
        refusal = self._sso_refusal(request, user)
        if refusal is not None:
            return refusal
        response: HttpResponse | None = super().pre_login(request, user, **kwargs)
        return response

    def _sso_refusal(self, request: HttpRequest, user: AbstractBaseUser) -> HttpResponse | None:
        """Every sign-in (password through another of the person's addresses, passkey, the link of
        an email confirmation) of a person with an address in a domain that requires SSO, unless
        this very sign-in came through that organization's IdP (allauth's latest record of it)."""
        emails = [
            str(getattr(user, "email", "") or ""),
            *EmailAddress.objects.filter(user=user, verified=True).values_list("email", flat=True),
        ]
        provider = sso_required_for_emails(emails=emails)
        if provider is None:
            return None
        records = get_authentication_records(request, user)
        latest = records[-1] if records else {}
        if latest.get("method") == "socialaccount" and latest.get("provider") == sso_provider_id(provider):
            return None
        clear_login(request)  # as allauth does for an inactive account: nothing of this attempt is kept
        self.add_message(request, messages.ERROR, message=SSO_REQUIRED_MESSAGE)
        return HttpResponseRedirect(reverse("portal-sso-signin"))

    def _get_login_attempts_cache_key(self, request: HttpRequest, **credentials: Any) -> str:
        # allauth keys failed sign-ins by site domain and login; without django.contrib.sites the
        # domain is the request's host, so each organization's host would count on its own. One
        # person, one count, whichever host is tried (tests/portal/test_accounts_limits.py).
        login = credentials.get("email", credentials.get("username", ""))
        return str(login).lower()


class MFAAdapter(DefaultMFAAdapter):
    error_messages = {
        **DefaultMFAAdapter.error_messages,
        "cannot_delete_authenticator": "An organization you belong to requires two-factor authentication: "
        "add another authenticator before removing this one.",
    }

    def can_delete_authenticator(self, authenticator: Authenticator) -> bool:
        # The last factor of a member of an organization that requires one stays (asked by
        # allauth before an authenticator app is deactivated).
        if authenticator.type not in MFA_FACTOR_TYPES:
            return True
        others = Authenticator.objects.filter(user_id=authenticator.user_id, type__in=MFA_FACTOR_TYPES).exclude(
            pk=authenticator.pk
        )
        if others.exists():
            return True
        # Through the membership relation: the rbac app sits above accounts.
        return not Organization.objects.filter(memberships__user_id=authenticator.user_id, mfa_required=True).exists()

    def get_public_key_credential_rp_entity(self) -> dict[str, str]:
        # One relying party for the platform host and every organization's host under it: a
        # security key added on acme.<BASE_DOMAIN> also answers a sign-in on <BASE_DOMAIN>.
        entity: dict[str, str] = super().get_public_key_credential_rp_entity()
        host = entity["id"]
        base = settings.BASE_DOMAIN
        if host == base or host.endswith(f".{base}"):
            entity["id"] = base
        return entity
