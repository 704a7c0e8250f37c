"""Brute force: failed sign-ins and password resets are limited per account and per address, on
every host together."""

from __future__ import annotations

from allauth.account.models import EmailAddress

from apps.accounts.models import User
from apps.tenants.models import Organization
from tests.portal.conftest import ClientFor


def _user(email: str) -> User:
    user = User.objects.create_user(email=email, password="the-right-passphrase-42")
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    return user


def test_failed_sign_ins_for_one_account_are_limited_across_hosts(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    _user("target@limits.example")
    hosts = ["localhost", "tenant-a.localhost", "tenant-b.localhost", "localhost", "tenant-a.localhost"]
    for host in hosts:
        response = client_for(host).post("/accounts/login/", {"login": "target@limits.example", "password": "wrong"})
        assert response.status_code == 200  # the form again, with its error
    # The sixth attempt within five minutes, on yet another host, is refused before the password
    # is checked: even the right one.
    refused = client_for("tenant-b.localhost").post(
        "/accounts/login/", {"login": "target@limits.example", "password": "the-right-passphrase-42"}
    )
    assert refused.status_code == 200
    assert b"Too many failed login attempts" in refused.content
    assert "_auth_user_id" not in refused.wsgi_request.session


def test_password_resets_for_one_account_are_limited(db: None, client_for: ClientFor) -> None:
    _user("reset@limits.example")
    answers = [
        client_for("localhost").post("/accounts/password/reset/", {"email": "reset@limits.example"}).status_code
        for _ in range(6)
    ]
    assert answers[:5] == [302] * 5
    assert answers[5] == 429
