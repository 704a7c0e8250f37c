"""Two tiers of tests.

Fast tests take `tenant` or `two_tenants` (or `db`): they run inside one transaction that is
rolled back, with the connection on an organization's schema. The organizations are provisioned
once per session, committed, in the test database.

Integration tests (marked `integration`) take `live_db`: their writes are committed, so a real
Celery worker process or a subprocess can see them; what they create they remove themselves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test.utils import setup_databases, teardown_databases
from pytest_django.plugin import DjangoDbBlocker
from rest_framework.test import APIClient

from apps.apikeys.selectors import apikey_cache_forget
from apps.apikeys.services import apikey_create
from apps.llm.platform.selectors import catalog_forget
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from tests.factories import TEST_ACTOR, organization_make, organization_purge
from tests.support.fake_provider import FakeProvider

TENANT_A = "tenant-a"
TENANT_B = "tenant-b"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test gets an id of its own. pytest-xdist hands tests out by id: of tests sharing one,
    it runs one and silently drops the rest. Under pytest 9.2, schemathesis' items (one per API
    operation, tests/security/test_api_schema_fuzz.py) all carry their function's id, as pytest now
    builds it from the function's name and no parametrization; their own names have the operation."""
    for item in items:
        named = item.nodeid.endswith(f"::{item.name}")
        if type(item).__name__ == "SchemathesisFunction" and item.parent is not None and not named:
            item._id = item.parent.id.child(item.name)
    shared = [nodeid for nodeid, count in Counter(item.nodeid for item in items).items() if count > 1]
    if shared:
        raise pytest.UsageError(f"tests share an id, so pytest-xdist would run only one of each: {shared[:5]}")


@pytest.fixture(scope="session")
def django_db_setup(
    request: pytest.FixtureRequest,
    django_test_environment: None,
    django_db_blocker: DjangoDbBlocker,
    django_db_keepdb: bool,
    django_db_modify_db_settings: None,
) -> Iterator[None]:
    """The test database, always (pytest-django's own fixture sets it up only for tests that take
    `db`, so a run of integration tests alone would use the real database). Under pytest-xdist each
    worker has a PostgreSQL of its own (cognitionos/settings/test.py); on a PostgreSQL given by
    DATABASE_URL, `django_db_modify_db_settings` names each worker's test database apart."""
    with django_db_blocker.unblock():
        databases = setup_databases(verbosity=0, interactive=False, keepdb=django_db_keepdb, aliases={"default": {}})
        organization_make(slug=TENANT_A, name="Tenant A")
        organization_make(slug=TENANT_B, name="Tenant B")
    yield
    if not django_db_keepdb:
        with django_db_blocker.unblock():
            teardown_databases(databases, verbosity=0)


@pytest.fixture
def tenant(db: None) -> Iterator[Organization]:
    """Organization A, with the connection on its schema for the test."""
    organization = Organization.objects.get(slug=TENANT_A)
    tenant_connection().set_tenant(organization)
    yield organization
    tenant_connection().set_schema_to_public()


@pytest.fixture
def two_tenants(db: None) -> Iterator[tuple[Organization, Organization]]:
    """Organizations A and B; the connection starts on the public schema."""
    tenant_connection().set_schema_to_public()
    yield Organization.objects.get(slug=TENANT_A), Organization.objects.get(slug=TENANT_B)
    tenant_connection().set_schema_to_public()


class LiveDb:
    """Committed writes for integration tests, and cleanup of the organizations they create."""

    def __init__(self) -> None:
        self.created: list[Organization] = []

    def organization(self, *, slug: str, name: str | None = None) -> Organization:
        organization = organization_make(slug=slug, name=name or slug.title())
        self.created.append(organization)
        return organization

    def track(self, organization: Organization) -> None:
        """Remove at the end an organization created outside this helper (by a subprocess, say)."""
        self.created.append(organization)


@pytest.fixture
def live_db(django_db_setup: None, django_db_blocker: DjangoDbBlocker) -> Iterator[LiveDb]:
    with django_db_blocker.unblock():
        live = LiveDb()
        try:
            yield live
        finally:
            tenant_connection().set_schema_to_public()
            for organization in live.created:
                organization_purge(organization)


@pytest.fixture(autouse=True)
def _fresh_tenant_resolution() -> Iterator[None]:
    """Each test resolves hosts afresh: a cached organization from an earlier test is stale."""
    organization_cache_forget()
    yield
    organization_cache_forget()


ApiClientFor = Callable[[Organization], APIClient]


@pytest.fixture
def api_client_for(db: None) -> Iterator[ApiClientFor]:
    """`api_client_for(organization)`: a DRF test client calling the API host with a new API key of
    that organization. Requests share the test's transaction."""

    def make(organization: Organization) -> APIClient:
        tenant_connection().set_schema_to_public()
        issued = apikey_create(organization=organization, name="tests", actor=TEST_ACTOR)
        client = APIClient(HTTP_HOST="localhost")
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.key}")
        return client

    apikey_cache_forget()
    yield make
    apikey_cache_forget()
    tenant_connection().set_schema_to_public()


# The fake OpenAI and Anthropic servers as the platform's provider, and API keys of A and B.


@pytest.fixture
def key_a(two_tenants: tuple[Organization, Organization]) -> str:
    return apikey_create(organization=two_tenants[0], name="tests A", actor=TEST_ACTOR).key


@pytest.fixture
def key_b(two_tenants: tuple[Organization, Organization]) -> str:
    return apikey_create(organization=two_tenants[1], name="tests B", actor=TEST_ACTOR).key


@pytest.fixture(scope="session")
def fake_provider_server() -> Iterator[FakeProvider]:
    with FakeProvider() as server:
        yield server


@pytest.fixture
def fake_provider(fake_provider_server: FakeProvider, settings: Any) -> FakeProvider:
    """The fake OpenAI and Anthropic servers, configured as the platform's default credentials."""
    fake_provider_server.reset()
    settings.OPENAI_API_KEY = "sk-test-platform"
    settings.OPENAI_BASE_URL = fake_provider_server.openai_base_url
    settings.ANTHROPIC_API_KEY = "sk-ant-test-platform"
    settings.ANTHROPIC_BASE_URL = fake_provider_server.anthropic_base_url
    settings.LLM_RETRY_BASE_S = 0.01
    settings.LLM_PROVIDER_TIMEOUT_S = 5
    catalog_forget()
    return fake_provider_server
