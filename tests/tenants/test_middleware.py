from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.services import organization_status_set
from tests.factories import TEST_ACTOR


@pytest.fixture
def client() -> Client:
    return Client()


def test_portal_host_serves_its_own_organization(
    client: Client, two_tenants: tuple[Organization, Organization]
) -> None:
    response_a = client.get("/", HTTP_HOST="tenant-a.localhost")
    response_b = client.get("/", HTTP_HOST="tenant-b.localhost:8000")
    assert response_a.status_code == 200 and response_b.status_code == 200
    assert b"Tenant A" in response_a.content and b"Tenant B" not in response_a.content
    assert b"Tenant B" in response_b.content and b"Tenant A" not in response_b.content


def test_unknown_organization_host_is_404(client: Client, db: None) -> None:
    response = client.get("/", HTTP_HOST="nobody.localhost", HTTP_ACCEPT="application/json")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "organization_not_found"


def test_host_outside_allowed_hosts_is_400(client: Client, db: None) -> None:
    assert client.get("/", HTTP_HOST="evil.example.com").status_code == 400


def test_nested_subdomain_is_not_an_organization(
    client: Client, two_tenants: tuple[Organization, Organization]
) -> None:
    assert client.get("/", HTTP_HOST="x.tenant-a.localhost").status_code == 404


def test_suspended_and_deleting_organizations_are_refused(
    client: Client, tenant: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    organization_status_set(organization=tenant, status=Organization.Status.SUSPENDED, actor=TEST_ACTOR)
    response = client.get("/", HTTP_HOST="tenant-a.localhost", HTTP_ACCEPT="application/json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "organization_suspended"
    html = client.get("/", HTTP_HOST="tenant-a.localhost")
    assert html.status_code == 403 and b"suspended" in html.content

    with django_capture_on_commit_callbacks(execute=True):
        organization_status_set(organization=tenant, status=Organization.Status.DELETING, actor=TEST_ACTOR)
    response = client.get("/", HTTP_HOST="tenant-a.localhost", HTTP_ACCEPT="application/json")
    assert (response.status_code, response.json()["error"]["code"]) == (403, "organization_deleting")


def test_past_due_organization_is_served_with_a_warning_header(client: Client, tenant: Organization) -> None:
    organization_status_set(organization=tenant, status=Organization.Status.PAST_DUE, actor=TEST_ACTOR)
    response = client.get("/", HTTP_HOST="tenant-a.localhost")
    assert response.status_code == 200
    assert response["X-CognitionOS-Organization-Status"] == "past_due"


def test_admin_is_on_the_public_host_only(client: Client, two_tenants: tuple[Organization, Organization]) -> None:
    assert client.get("/admin/login/", HTTP_HOST="localhost").status_code == 200
    assert client.get("/admin/login/", HTTP_HOST="tenant-a.localhost").status_code == 404


def test_health_answers_on_every_host_even_a_bare_address(client: Client, db: None) -> None:
    for host in ("localhost", "tenant-a.localhost", "nobody.localhost", "10.0.0.7:8000", "evil.example.com"):
        assert client.get("/health/live", HTTP_HOST=host).json() == {"status": "ok"}


def test_request_leaves_the_connection_on_public(
    client: Client, two_tenants: tuple[Organization, Organization]
) -> None:
    client.get("/", HTTP_HOST="tenant-b.localhost")
    assert tenant_connection().schema_name == "public"


def test_api_key_on_the_public_host_selects_the_key_organization(
    client: Client, two_tenants: tuple[Organization, Organization], settings: object
) -> None:
    settings.TENANT_API_KEY_RESOLVER = "tests.support.resolvers.resolve_by_test_key"  # type: ignore[attr-defined]
    response = client.get("/", HTTP_HOST="localhost", HTTP_AUTHORIZATION="Bearer test-key-tenant-b")
    assert b"Tenant B" in response.content
    unknown = client.get("/", HTTP_HOST="localhost", HTTP_AUTHORIZATION="Bearer not-a-key")
    assert b"Tenant" not in unknown.content and b"CognitionOS" in unknown.content


def test_tenant_resolution_is_one_query_then_none_while_cached(
    client: Client, two_tenants: tuple[Organization, Organization], django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(2):  # the organization with its plan, and setting the search path
        client.get("/", HTTP_HOST="tenant-a.localhost")
    with django_assert_num_queries(0):
        assert b"Tenant A" in client.get("/", HTTP_HOST="tenant-a.localhost").content


def test_status_change_reaches_resolution_once_committed(
    client: Client, tenant: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    assert client.get("/", HTTP_HOST="tenant-a.localhost").status_code == 200  # now cached
    with django_capture_on_commit_callbacks(execute=True):
        organization_status_set(organization=tenant, status=Organization.Status.SUSPENDED, actor=TEST_ACTOR)
    assert client.get("/", HTTP_HOST="tenant-a.localhost").status_code == 403
