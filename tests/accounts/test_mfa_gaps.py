"""Passkey sign-in on every host's sign-in page, and a security key removed under the same rule as an
authenticator app (the last factor of a member of an organization that requires one stays)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from django.contrib.messages import get_messages
from django.test import Client

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.rbac.models import Role
from apps.rbac.services import membership_create
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from apps.tenants.services import organization_mfa_require_set
from cognitionos.redis import redis_client

PASSWORD = "a-long-enough-passphrase-42"
SYSTEM = Principal.system("tests")


@pytest.fixture(autouse=True)
def _fresh_counters() -> Iterator[None]:
    def forget() -> None:
        for key in redis_client().scan_iter(match="global:*allauth:rl:*"):
            redis_client().delete(key)

    forget()
    yield
    forget()


def _member(email: str, *organizations: Organization) -> User:
    user = User.objects.create_user(email=email, password=PASSWORD)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    for organization in organizations:
        membership_create(user=user, organization=organization, role=Role.DEVELOPER, actor=SYSTEM)
    tenant_connection().set_schema_to_public()
    return user


def _security_key(user: User, name: str = "My key") -> Authenticator:
    # The row allauth keeps for a WebAuthn credential (the credential itself is not needed to remove it).
    return Authenticator.objects.create(
        user=user, type=Authenticator.Type.WEBAUTHN, data={"name": name, "credential": {}, "passwordless": True}
    )


def _signed_in_recently(host: str, user: User) -> Client:
    client = Client(HTTP_HOST=host)
    client.force_login(user)
    assert client.post("/accounts/reauthenticate/", {"password": PASSWORD}).status_code == 302
    return client


@pytest.mark.parametrize(
    ("host", "path"),
    [("localhost", "/accounts/login/"), ("tenant-a.localhost", "/accounts/login/"), ("tenant-a.localhost", "/")],
)
def test_every_sign_in_page_offers_a_passkey(
    two_tenants: tuple[Organization, Organization], host: str, path: str
) -> None:
    # The platform's sign-in page and an organization's (its home, signed out): the passkey button,
    # allauth's form it submits, and the script that asks the browser for the credential.
    page = Client(HTTP_HOST=host).get(path)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Sign in with a passkey" in html
    assert 'form="mfa_login"' in html and 'id="mfa_login" action="/accounts/2fa/webauthn/login/"' in html
    assert "mfa/js/webauthn.js" in html
    if path == "/":
        assert "Sign in to Tenant A" in html and '<input type="hidden" name="next" value="/">' in html


def test_the_last_security_key_of_a_member_of_an_organization_requiring_mfa_stays(
    two_tenants: tuple[Organization, Organization],
) -> None:
    tenant_a, _tenant_b = two_tenants
    organization_mfa_require_set(organization=tenant_a, required=True, actor=SYSTEM)
    organization_cache_forget()
    user = _member("key-only@mfa.example", tenant_a)
    key = _security_key(user)
    client = _signed_in_recently("tenant-a.localhost", user)

    refused = client.post(f"/accounts/2fa/webauthn/keys/{key.pk}/remove/")
    assert refused.status_code == 302 and refused["Location"] == "/accounts/2fa/webauthn/"
    assert Authenticator.objects.filter(pk=key.pk).exists()
    notes = [str(message) for message in get_messages(refused.wsgi_request)]
    assert any("requires two-factor authentication" in note for note in notes), notes

    # With a second key, one of them may go; the last one stays again.
    spare = _security_key(user, "Spare")
    assert client.post(f"/accounts/2fa/webauthn/keys/{key.pk}/remove/").status_code == 302
    assert not Authenticator.objects.filter(pk=key.pk).exists()
    client.post(f"/accounts/2fa/webauthn/keys/{spare.pk}/remove/")
    assert Authenticator.objects.filter(pk=spare.pk).exists()


def test_outside_such_organizations_the_last_key_can_go(two_tenants: tuple[Organization, Organization]) -> None:
    tenant_a, tenant_b = two_tenants
    organization_mfa_require_set(organization=tenant_a, required=True, actor=SYSTEM)
    organization_cache_forget()
    user = _member("free@mfa.example", tenant_b)  # a member of the other organization only
    key = _security_key(user)
    client = _signed_in_recently("tenant-b.localhost", user)
    assert client.post(f"/accounts/2fa/webauthn/keys/{key.pk}/remove/").status_code == 302
    assert not Authenticator.objects.filter(pk=key.pk).exists()
