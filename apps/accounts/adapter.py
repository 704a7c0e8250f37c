"""allauth's hooks."""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from django.http import HttpRequest


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
