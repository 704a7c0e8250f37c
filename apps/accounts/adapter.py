"""allauth's hooks."""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.mfa.adapter import DefaultMFAAdapter
from allauth.mfa.models import Authenticator
from django.conf import settings
from django.http import HttpRequest

from apps.accounts.selectors import MFA_FACTOR_TYPES
from apps.tenants.models import Organization


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        # Anyone may create an account and a first organization; invitations come later.
        return True

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
