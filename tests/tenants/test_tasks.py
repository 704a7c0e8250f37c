"""Tenant tasks on a real worker process (threads pool) against committed data."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from celery.result import AsyncResult
from django.conf import settings
from django_tenants.utils import schema_context

from apps.tenants.models import Organization
from apps.tenants.selectors import public_organization
from apps.tenants.services import organization_status_set
from apps.tenants.tasks import TenantTaskRefused
from cognitionos.celery import app as celery_app
from tests.conftest import LiveDb
from tests.factories import TEST_ACTOR
from tests.knowledge.factories import document_make, knowledge_base_make
from tests.support.probe_tasks import document_titles
from tests.support.worker import celery_worker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(django_db_setup: None) -> Iterator[None]:
    with celery_worker(concurrency=8):
        yield


@pytest.fixture
def libraries(live_db: LiveDb, worker: None) -> tuple[Organization, Organization]:
    red = live_db.organization(slug="library-red")
    blue = live_db.organization(slug="library-blue")
    with schema_context(red.schema_name):
        document_make(knowledge_base_make(name="Library"), title="red handbook")
    with schema_context(blue.schema_name):
        library = knowledge_base_make(name="Library")
        document_make(library, title="blue handbook")
        document_make(library, title="blue secrets")
    return red, blue


def _result(result: AsyncResult[object]) -> object:
    return result.get(timeout=30)


def test_task_reads_only_its_tenant_data_under_concurrency(libraries: tuple[Organization, Organization]) -> None:
    red, blue = libraries
    sent = [(org, document_titles.delay(tenant_id=org.pk)) for _ in range(20) for org in (red, blue)]
    for organization, result in sent:
        outcome = _result(result)
        if organization == red:
            assert outcome == {"schema": "org_library_red", "titles": ["red handbook"]}
        else:
            assert outcome == {"schema": "org_library_blue", "titles": ["blue handbook", "blue secrets"]}


def test_task_cannot_be_sent_without_a_tenant() -> None:
    with pytest.raises(TenantTaskRefused, match="must be sent with tenant_id"):
        document_titles.delay()
    with pytest.raises(TypeError):
        document_titles.delay(tenant_id=1, unexpected=True)


def test_worker_refuses_the_public_schema_and_a_missing_tenant(libraries: tuple[Organization, Organization]) -> None:
    # Sent by name, as another client could: only the worker's own check stands in the way. (A send
    # by name ignores the result unless it says otherwise, cognitionos/celery.py.)
    for kwargs in ({"tenant_id": public_organization().pk}, {}, {"tenant_id": 10**9}):
        result = celery_app.send_task(document_titles.name, kwargs=kwargs, ignore_result=False)
        with pytest.raises(Exception) as refused:  # noqa: PT011 - the worker's exception type travels by name
            _result(result)
        assert type(refused.value).__name__ == "TenantTaskRefused"


def test_task_refuses_a_suspended_organization(libraries: tuple[Organization, Organization]) -> None:
    red, blue = libraries
    # The worker may already hold red as active (its audit chainer ran there): a suspension takes
    # effect in every process within TENANT_RESOLUTION_CACHE_SECONDS, not at once.
    _result(document_titles.delay(tenant_id=red.pk))
    organization_status_set(organization=red, status=Organization.Status.SUSPENDED, actor=TEST_ACTOR)
    deadline = time.monotonic() + settings.TENANT_RESOLUTION_CACHE_SECONDS + 5
    refused: Exception | None = None
    while refused is None:
        try:
            _result(document_titles.delay(tenant_id=red.pk))
        except Exception as error:  # noqa: BLE001 - the worker's exception type travels by name
            refused = error
        else:
            assert time.monotonic() < deadline, "a suspended organization's tasks still ran after the cache window"
            time.sleep(0.5)
    assert type(refused).__name__ == "TenantTaskRefused"
    assert "library-red is suspended" in str(refused)
    assert _result(document_titles.delay(tenant_id=blue.pk)) == {
        "schema": "org_library_blue",
        "titles": ["blue handbook", "blue secrets"],
    }
