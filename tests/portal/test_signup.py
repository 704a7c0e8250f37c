"""Sign-up creates the account and its first organization; the verification mail's link signs the
person in and lands them in the organization's portal, on its own host, through a handover."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.test import Client

from apps.accounts.models import User
from apps.rbac.models import Membership, Role
from apps.tenants.models import Organization
from tests.portal.conftest import ClientFor
from tests.portal.handover_support import handover_form, handover_post

PASSWORD = "a-long-enough-passphrase-42"


def _signup(client_for: ClientFor, *, email: str, name: str, slug: str) -> tuple[Client, Any]:
    platform = client_for("localhost")
    response = platform.post(
        "/accounts/signup/",
        {
            "email": email,
            "password1": PASSWORD,
            "password2": PASSWORD,
            "organization_name": name,
            "organization_slug": slug,
        },
    )
    return platform, response


def _verification_link(email: str) -> str:
    message = next(m for m in reversed(mail.outbox) if email in m.to)
    match = re.search(r"https?://\S+/accounts/confirm-email/\S+/", str(message.body))
    assert match, message.body
    return match.group(0)


@pytest.mark.django_db
def test_signup_creates_the_user_and_the_organization_with_the_user_as_owner(client_for: ClientFor) -> None:
    _platform, response = _signup(client_for, email="ada@acme.example", name="Acme", slug="acme-signup")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/confirm-email/"

    user = User.objects.get(email="ada@acme.example")
    organization = Organization.objects.get(slug="acme-signup")
    assert organization.name == "Acme"
    assert Membership.objects.get(user=user, organization=organization).role == Role.OWNER
    assert not EmailAddress.objects.get(user=user).verified
    assert "acme-signup.localhost" in organization.domains.values_list("domain", flat=True)


@pytest.mark.django_db
def test_unverified_user_is_not_signed_in(client_for: ClientFor) -> None:
    platform, _ = _signup(client_for, email="bob@acme.example", name="Acme", slug="acme-unverified")
    assert platform.get("/enter/")["Location"].startswith("/accounts/login/")
    response = client_for("localhost").post("/accounts/login/", {"login": "bob@acme.example", "password": PASSWORD})
    # Mandatory verification: the sign-in stops at "check your mail" and sends the link again.
    assert response.status_code == 302 and response["Location"] == "/accounts/confirm-email/"


@pytest.mark.django_db
def test_verification_link_signs_in_and_lands_in_the_organization_portal(client_for: ClientFor) -> None:
    platform, _ = _signup(client_for, email="cy@acme.example", name="Acme Verified", slug="acme-verified")
    link = _verification_link("cy@acme.example")
    assert urlsplit(link).netloc == "localhost"

    confirm_path = urlsplit(link).path
    assert platform.get(confirm_path).status_code == 200
    confirmed = platform.post(confirm_path)
    assert confirmed.status_code == 302
    assert EmailAddress.objects.get(email="cy@acme.example").verified

    entered = platform.get(confirmed["Location"])  # /enter/ on the platform host
    handover = handover_form(entered)
    assert (handover.host, handover.path) == ("acme-verified.localhost", "/handover/")

    organization_host = client_for("acme-verified.localhost")
    landed = handover_post(organization_host, handover.token)
    assert landed.status_code == 302 and landed["Location"] == "/"
    home = organization_host.get("/")
    assert home.status_code == 200
    assert b"Acme Verified" in home.content
    assert b"cognitionos apikey create --tenant acme-verified" in home.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("slug", "message"),
    [
        ("Bad_Slug", "invalid slug"),
        ("ab", "invalid slug"),
        ("double--hyphen", "invalid slug"),
        ("www", "is reserved"),
        ("tenant-a", "already taken"),
    ],
)
def test_signup_refuses_slugs_the_cli_refuses(client_for: ClientFor, slug: str, message: str) -> None:
    _platform, response = _signup(client_for, email=f"x-{len(slug)}@acme.example", name="X", slug=slug)
    assert response.status_code == 200
    assert message in response.content.decode().lower() or message in response.content.decode()
    assert not User.objects.filter(email=f"x-{len(slug)}@acme.example").exists()


@pytest.mark.django_db
def test_signup_form_labels_every_field(client_for: ClientFor) -> None:
    page = client_for("localhost").get("/accounts/signup/").content.decode()
    for field in ("email", "password1", "password2", "organization_name", "organization_slug"):
        assert re.search(rf'<label for="id_{field}"', page), field


@pytest.mark.django_db
def test_signup_with_a_taken_email_creates_no_organization_and_reveals_nothing(client_for: ClientFor) -> None:
    _signup(client_for, email="dup@acme.example", name="First", slug="acme-first")
    _platform, response = _signup(client_for, email="dup@acme.example", name="Second", slug="acme-second")
    # The same answer as a new sign-up (no account enumeration); the owner gets a mail instead.
    assert response.status_code == 302 and response["Location"] == "/accounts/confirm-email/"
    assert not Organization.objects.filter(slug="acme-second").exists()
    assert User.objects.filter(email="dup@acme.example").count() == 1


@pytest.mark.django_db
def test_signup_on_an_organizations_host_creates_the_new_organization_and_lands_in_it(
    client_for: ClientFor, tenant: Organization
) -> None:
    # Sign-up is offered on every organization's host too; the organization it creates lives in
    # the public schema whichever host the request came to, and the request stays on its own.
    host = f"{tenant.slug}.localhost"
    visitor = client_for(host)
    response = visitor.post(
        "/accounts/signup/",
        {
            "email": "dee@beta.example",
            "password1": PASSWORD,
            "password2": PASSWORD,
            "organization_name": "Beta",
            "organization_slug": "beta-from-host",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert response["Location"] == "/accounts/confirm-email/"
    organization = Organization.objects.get(slug="beta-from-host")
    user = User.objects.get(email="dee@beta.example")
    assert Membership.objects.get(user=user, organization=organization).role == Role.OWNER
    assert not Membership.objects.filter(user=user, organization=tenant).exists()

    link = _verification_link("dee@beta.example")
    assert urlsplit(link).netloc == host
    confirmed = visitor.post(urlsplit(link).path)
    assert confirmed.status_code == 302
    entered = visitor.get(confirmed["Location"])  # /enter/ on the first organization's host
    handover = handover_form(entered)
    assert (handover.host, handover.path) == ("beta-from-host.localhost", "/handover/")
    beta = client_for("beta-from-host.localhost")
    assert handover_post(beta, handover.token)["Location"] == "/"
    home = beta.get("/")
    assert home.status_code == 200 and b"Beta" in home.content
    # The first host's pages still answer from its own schema after the sign-up.
    assert client_for(host).get("/accounts/login/").status_code == 200
