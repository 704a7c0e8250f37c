"""The handover token: one use, one host, one minute, one person."""

from __future__ import annotations

import time
from unittest import mock

import pytest
from allauth.account.models import EmailAddress
from django.test import Client

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.rbac.models import Role
from apps.rbac.services import membership_create
from apps.tenants.models import Organization
from tests.portal.conftest import ClientFor
from tests.portal.handover_support import handover_form, handover_post, token_for

PASSWORD = "a-long-enough-passphrase-42"


def _member(email: str, *organizations: Organization) -> User:
    user = User.objects.create_user(email=email, password=PASSWORD)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    for organization in organizations:
        membership_create(user=user, organization=organization, role=Role.DEVELOPER, actor=Principal.system("tests"))
    return user


def _signed_out(client: Client) -> bool:
    """The organization's home, seen signed out, is its sign-in page."""
    response = client.get("/")
    return response.status_code == 200 and b"Sign in to" in response.content


def _token_for(user: User, organization: Organization) -> str:
    return token_for(user, organization)


def test_token_signs_in_on_its_organization_host(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, _tenant_b = two_tenants
    user = _member("dev@handover.example", tenant_a)
    client = client_for("tenant-a.localhost")
    response = handover_post(client, _token_for(user, tenant_a))
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_token_is_refused_on_another_organization_host(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, tenant_b = two_tenants
    user = _member("dev@handover.example", tenant_a, tenant_b)
    client = client_for("tenant-b.localhost")
    response = handover_post(client, _token_for(user, tenant_a))
    assert response.status_code == 400
    assert _signed_out(client)


def test_token_is_refused_on_reuse(two_tenants: tuple[Organization, Organization], client_for: ClientFor) -> None:
    tenant_a, _ = two_tenants
    user = _member("dev@handover.example", tenant_a)
    token = _token_for(user, tenant_a)
    assert handover_post(client_for("tenant-a.localhost"), token).status_code == 302
    second = client_for("tenant-a.localhost")
    assert handover_post(second, token).status_code == 400
    assert _signed_out(second)


def test_token_is_refused_after_its_lifetime(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, _ = two_tenants
    user = _member("dev@handover.example", tenant_a)
    token = _token_for(user, tenant_a)
    later = time.time() + 61
    with mock.patch("django.core.signing.time.time", return_value=later):
        response = handover_post(client_for("tenant-a.localhost"), token)
    assert response.status_code == 400


def test_forged_token_is_refused(two_tenants: tuple[Organization, Organization], client_for: ClientFor) -> None:
    tenant_a, _ = two_tenants
    user = _member("dev@handover.example", tenant_a)
    token = _token_for(user, tenant_a)
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert handover_post(client_for("tenant-a.localhost"), forged).status_code == 400
    assert client_for("tenant-a.localhost").post("/handover/", HTTP_ORIGIN="http://localhost").status_code == 400


def test_handover_is_not_served_on_the_platform_host(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, _ = two_tenants
    user = _member("dev@handover.example", tenant_a)
    assert handover_post(client_for("localhost"), _token_for(user, tenant_a)).status_code == 404


def test_switcher_hands_over_only_to_the_person_s_own_organizations(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, tenant_b = two_tenants
    user = _member("dev@handover.example", tenant_a)
    on_a = client_for("tenant-a.localhost")
    on_a.force_login(user)
    page = on_a.get("/").content.decode()
    assert "/enter/tenant-a/" in page and "/enter/tenant-b/" not in page
    assert on_a.get("/enter/tenant-b/").status_code == 404

    membership_create(user=user, organization=tenant_b, role=Role.VIEWER, actor=Principal.system("tests"))
    switched = handover_form(on_a.get("/enter/tenant-b/"))
    assert (switched.host, switched.path) == ("tenant-b.localhost", "/handover/")
    on_b = client_for("tenant-b.localhost")
    assert _signed_out(on_b)  # not signed in there until the handover
    assert handover_post(on_b, switched.token, origin="http://tenant-a.localhost").status_code == 302
    home = on_b.get("/")
    assert home.status_code == 200 and b"Tenant B" in home.content


def test_a_signed_in_non_member_gets_no_organization_page(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, _tenant_b = two_tenants
    user = _member("dev@handover.example", tenant_a)
    on_b = client_for("tenant-b.localhost")
    on_b.force_login(user)
    response = on_b.get("/")
    assert response.status_code == 403
    assert b"Tenant B" in response.content and b"not a member" in response.content


def test_sign_in_on_the_platform_host_hands_over_to_the_organization(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, _ = two_tenants
    _member("dev@handover.example", tenant_a)
    platform = client_for("localhost")
    signed_in = platform.post("/accounts/login/", {"login": "dev@handover.example", "password": PASSWORD})
    assert signed_in.status_code == 302 and signed_in["Location"] == "/enter/"
    handover = handover_form(platform.get("/enter/"))
    assert handover.host == "tenant-a.localhost"
    # The session moved: the platform host is signed out, the organization's host signed in.
    assert platform.get("/enter/")["Location"].startswith("/accounts/login/")
    on_a = client_for("tenant-a.localhost")
    handover_post(on_a, handover.token)
    assert on_a.get("/").status_code == 200
    # How they signed in travels with them (what an organization's MFA requirement will read).
    methods = [record["method"] for record in on_a.session["account_authentication_methods"]]
    assert methods == ["password"]


def test_with_several_organizations_the_platform_host_asks_which(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    user = _member("dev@handover.example", *two_tenants)
    platform = client_for("localhost")
    platform.force_login(user)
    page = platform.get("/enter/")
    assert page.status_code == 200
    assert b"/enter/tenant-a/" in page.content and b"/enter/tenant-b/" in page.content


@pytest.mark.django_db
def test_sign_out_ends_the_session_on_that_host(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, _ = two_tenants
    user = _member("dev@handover.example", tenant_a)
    on_a = client_for("tenant-a.localhost")
    on_a.force_login(user)
    assert on_a.get("/").status_code == 200
    assert on_a.post("/accounts/logout/").status_code == 302
    assert _signed_out(on_a)


def test_signed_out_organization_home_is_its_sign_in_page_and_signs_in_there(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, _ = two_tenants
    _member("dev@handover.example", tenant_a)
    on_a = client_for("tenant-a.localhost")
    page = on_a.get("/")
    assert page.status_code == 200 and b"Sign in to Tenant A" in page.content
    signed_in = on_a.post("/accounts/login/?next=/", {"login": "dev@handover.example", "password": PASSWORD})
    assert signed_in.status_code == 302 and signed_in["Location"] == "/"
    assert b"Get started" in on_a.get("/").content


def test_token_only_leads_to_a_path_on_its_own_host(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, _ = two_tenants
    user = _member("dev@handover.example", tenant_a)
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        landed = handover_post(client_for("tenant-a.localhost"), token_for(user, tenant_a, next_path=target))
        assert landed.status_code == 302 and landed["Location"] == "/", target


def test_token_of_a_deactivated_user_is_refused(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, _ = two_tenants
    user = _member("dev@handover.example", tenant_a)
    token = _token_for(user, tenant_a)
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert handover_post(client_for("tenant-a.localhost"), token).status_code == 400


def test_a_get_with_a_valid_token_signs_nobody_in(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    # A link (in a mail, an image, another site's page) can't sign a browser in: only the form's POST.
    tenant_a, _ = two_tenants
    user = _member("dev@handover.example", tenant_a)
    token = _token_for(user, tenant_a)
    client = client_for("tenant-a.localhost")
    assert client.get("/handover/", {"token": token}).status_code == 405
    assert _signed_out(client)
    # Nor did the GET use the token up: the form's POST still works.
    assert handover_post(client, token).status_code == 302 and not _signed_out(client)


def test_a_post_from_another_site_signs_nobody_in(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    # Login CSRF: another site posting its owner's token would sign the visitor in as its owner.
    tenant_a, _ = two_tenants
    user = _member("dev@handover.example", tenant_a)
    client = client_for("tenant-a.localhost")
    for origin in ("https://evil.example", "http://localhost.evil.example", "null", ""):
        refused = handover_post(client, _token_for(user, tenant_a), origin=origin)
        assert refused.status_code == 403, origin
        assert _signed_out(client)
    # From an organization's host (the switcher) or the platform host it works.
    assert handover_post(client, _token_for(user, tenant_a), origin="http://tenant-b.localhost").status_code == 302


def test_the_source_page_posts_the_token_with_a_named_button(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, tenant_b = two_tenants
    user = _member("dev@handover.example", tenant_a, tenant_b)
    on_a = client_for("tenant-a.localhost")
    on_a.force_login(user)
    page = on_a.get("/enter/tenant-b/")
    form = handover_form(page)
    assert form.token not in page.get("Location", "")
    assert b">Continue to Tenant B</button>" in page.content
