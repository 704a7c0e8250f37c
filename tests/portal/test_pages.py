"""Password reset, the sign-up form's slug check, the shell's assets."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from allauth.account.models import EmailAddress
from django.core import mail

from apps.accounts.models import User
from apps.tenants.models import Organization
from tests.portal.conftest import ClientFor


@pytest.mark.parametrize("host", ["localhost", "tenant-a.localhost"])
def test_password_reset_by_mail_sets_a_new_password(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, host: str
) -> None:
    user = User.objects.create_user(email="forgetful@example.com", password="the-old-passphrase-42")
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    client = client_for(host)
    assert client.post("/accounts/password/reset/", {"email": "FORGETFUL@example.com"}).status_code == 302

    body = str(mail.outbox[-1].body)
    link = re.search(r"https?://\S+/accounts/password/reset/key/\S+/", body)
    assert link, body
    assert urlsplit(link.group(0)).netloc == host  # the link returns to the host it was asked on
    form = client.get(urlsplit(link.group(0)).path, follow=True)
    assert form.status_code == 200
    changed = client.post(
        form.redirect_chain[-1][0] if form.redirect_chain else urlsplit(link.group(0)).path,
        {"password1": "the-new-passphrase-42", "password2": "the-new-passphrase-42"},
    )
    assert changed.status_code == 302
    user.refresh_from_db()
    assert user.check_password("the-new-passphrase-42")


def test_slug_check_answers_as_the_person_types(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    platform = client_for("localhost")
    free = platform.get("/accounts/signup/slug-check/", {"organization_slug": "brand-new"}, HTTP_HX_REQUEST="true")
    assert free.status_code == 200 and b"brand-new.localhost" in free.content and b"is free" in free.content
    taken = platform.get("/accounts/signup/slug-check/", {"organization_slug": "tenant-b"})
    assert b"already taken" in taken.content
    invalid = platform.get("/accounts/signup/slug-check/", {"organization_slug": "No Spaces"})
    assert b"Invalid slug" in invalid.content
    page = platform.get("/accounts/signup/").content.decode()
    assert 'hx-get="/accounts/signup/slug-check/"' in page and 'id="slug-check"' in page


def test_shell_assets_are_served_without_a_cdn(db: None, client_for: ClientFor) -> None:
    platform = client_for("localhost")
    page = platform.get("/accounts/login/").content.decode()
    assert '<script src="/static/vendor/htmx/htmx.min.js" defer></script>' in page
    assert "https://" not in re.sub(r'href="https://[^"]*"', "", page)  # nothing loaded from elsewhere
    for path in ("/static/vendor/htmx/htmx.min.js", "/static/portal/portal.css"):
        response = platform.get(path)
        assert response.status_code == 200, path
        response.close()


@pytest.mark.parametrize("path", ["/accounts/email/", "/accounts/password/change/"])
def test_account_pages_render_in_the_shell_for_a_member(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, path: str
) -> None:
    user = User.objects.create_user(email="settings@example.com", password="a-long-enough-passphrase-42")
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    on_a = client_for("tenant-a.localhost")
    on_a.force_login(user)
    page = on_a.get(path)
    assert page.status_code == 200
    assert b'class="topbar"' in page.content and b"settings@example.com" in page.content
