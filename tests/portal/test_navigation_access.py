"""Every page in the portal's navigation, opened by each built-in role and by a member of another
organization: the page answers 200 to the roles whose permissions include what it needs, 403 to
the others, and is offered in the navigation exactly to those who may open it."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.portal.context_processors import NAVIGATION
from apps.rbac.models import Role
from apps.rbac.permissions import Permission, role_permissions
from apps.tenants.models import Organization
from tests.factories import member_make

PAGES = [item for item in NAVIGATION if item.get("permission")]


def _signed_in(organization: Organization, role: str) -> Client:
    client = Client(HTTP_HOST=f"{organization.slug}.localhost")
    client.force_login(member_make(organization=organization, role=role))
    return client


def _may(role: str, permission: str) -> bool:
    granted = role_permissions(role)
    return Permission(permission) in granted or Permission.ADMIN in granted


@pytest.mark.parametrize("role", [role.value for role in Role])
def test_each_role_opens_what_its_permissions_allow_and_is_offered_only_that(
    two_tenants: tuple[Organization, Organization], role: str
) -> None:
    organization = two_tenants[0]
    client = _signed_in(organization, role)
    home = client.get("/").content.decode()
    for item in PAGES:
        path = reverse(item["url_name"], urlconf="cognitionos.urls_tenant")
        allowed = _may(role, item["permission"])
        answer = client.get(path)
        assert answer.status_code == (200 if allowed else 403), (role, path, answer.status_code)
        assert (f'href="{path}"' in home) == allowed, (role, path)


def test_a_member_of_another_organization_opens_none_of_them(
    two_tenants: tuple[Organization, Organization],
) -> None:
    organization, other = two_tenants
    outsider = Client(HTTP_HOST=f"{organization.slug}.localhost")
    outsider.force_login(member_make(organization=other, role=Role.OWNER))
    for item in PAGES:
        path = reverse(item["url_name"], urlconf="cognitionos.urls_tenant")
        answer = outsider.get(path)
        assert answer.status_code in (403, 404), (path, answer.status_code)
        assert organization.name not in answer.content.decode() or answer.status_code == 403


def test_a_page_inside_a_section_marks_that_section(two_tenants: tuple[Organization, Organization]) -> None:
    client = _signed_in(two_tenants[0], Role.DEVELOPER)
    html = client.get("/jobs/new/").content.decode()
    assert '<a href="/jobs/" aria-current="true">Jobs</a>' in html
    assert 'aria-current="page"' not in html.split('class="sidenav"')[1].split("</nav>")[0]
    assert '<a href="/" aria-current' not in html  # Home is not the section of every page


def test_a_fragment_polled_after_the_session_ended_sends_the_whole_page_to_sign_in(
    two_tenants: tuple[Organization, Organization],
) -> None:
    signed_out = Client(HTTP_HOST=f"{two_tenants[0].slug}.localhost")
    polled = signed_out.get(
        "/jobs/",
        headers={
            "HX-Request": "true",
            "HX-Current-URL": f"http://{two_tenants[0].slug}.localhost/jobs/?status=running",
        },
    )
    assert polled.status_code == 401 and polled.content == b""
    assert polled["HX-Redirect"] == "/accounts/login/?next=/jobs/"
    # Only a path on this host comes back: never another host.
    elsewhere = signed_out.get(
        "/jobs/", headers={"HX-Request": "true", "HX-Current-URL": "http://evil.example//evil.example/x"}
    )
    assert elsewhere["HX-Redirect"] == "/accounts/login/?next=/"
    # A page (not a fragment) is redirected as before.
    assert signed_out.get("/jobs/").status_code == 302


def test_a_signed_in_page_reads_its_session_without_a_query_and_sign_out_ends_it(
    two_tenants: tuple[Organization, Organization],
) -> None:
    client = _signed_in(two_tenants[0], Role.VIEWER)
    client.get("/")
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/").status_code == 200
    assert not [query for query in queries.captured_queries if "django_session" in query["sql"]]
    session_cookie = client.cookies["sessionid"].value
    client.post("/accounts/logout/")
    replay = Client(HTTP_HOST=f"{two_tenants[0].slug}.localhost")
    replay.cookies["sessionid"] = session_cookie
    assert replay.get("/jobs/").status_code == 302  # the old cookie is signed out everywhere it was cached


@pytest.mark.parametrize("role", [role.value for role in Role])
def test_the_pages_inside_knowledge_answer_each_role_as_its_permissions_allow(
    two_tenants: tuple[Organization, Organization], role: str
) -> None:
    """Knowledge's pages behind the list: a knowledge base's page and settings need knowledge:read,
    the create form knowledge:write; a member of another organization finds none of them."""
    from apps.tenants.connection import organization_schema
    from tests.knowledge.factories import knowledge_base_make

    organization, other = two_tenants
    with organization_schema(organization):
        handbook = knowledge_base_make(name="Handbook")
    client = _signed_in(organization, role)
    pages = {
        f"/knowledge/{handbook.pk}/": "knowledge:read",
        f"/knowledge/{handbook.pk}/settings/": "knowledge:read",
        "/knowledge/new/": "knowledge:write",
    }
    for path, permission in pages.items():
        answer = client.get(path)
        assert answer.status_code == (200 if _may(role, permission) else 403), (role, path, answer.status_code)
    outsider = Client(HTTP_HOST=f"{organization.slug}.localhost")
    outsider.force_login(member_make(organization=other, role=role))
    for path in pages:
        answer = outsider.get(path)
        assert answer.status_code in (403, 404), (role, path, answer.status_code)
        assert "Handbook" not in answer.content.decode()
