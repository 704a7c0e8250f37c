"""TENANT_LIMIT_SET_CALLS is on: the search path is set once per connection and tenant, and a pooled
session remembers the path set on it outside a transaction (cognitionos.db_tenants). These prove
that a rollback can never leave a connection reading another organization's schema (django-tenants
#1262)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context

from apps.knowledge.models import KnowledgeBase
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.conftest import LiveDb


def _current_schema() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        return str(cursor.fetchone()[0])


class Abort(Exception):
    pass


def test_savepoint_rollback_after_switching_tenant_keeps_the_new_tenant(
    two_tenants: tuple[Organization, Organization],
) -> None:
    tenant_a, tenant_b = two_tenants
    tenant_connection().set_tenant(tenant_a)
    assert _current_schema() == tenant_a.schema_name
    try:
        with transaction.atomic():
            tenant_connection().set_tenant(tenant_b)
            KnowledgeBase.objects.create(name="written in B, rolled back", embedding_model="simulated-embedding")
            raise Abort
    except Abort:
        pass
    # PostgreSQL reverted the SET made inside the savepoint; the connection must set it again.
    assert _current_schema() == tenant_b.schema_name
    assert not KnowledgeBase.objects.filter(name="written in B, rolled back").exists()


def test_savepoint_rollback_inside_one_tenant_stays_there(two_tenants: tuple[Organization, Organization]) -> None:
    tenant_a, tenant_b = two_tenants
    tenant_connection().set_tenant(tenant_b)
    KnowledgeBase.objects.create(name="kept in B", embedding_model="simulated-embedding")
    try:
        with transaction.atomic():
            tenant_connection().set_tenant(tenant_a)
            _current_schema()
            tenant_connection().set_tenant(tenant_b)
            raise Abort
    except Abort:
        pass
    assert _current_schema() == tenant_b.schema_name
    assert KnowledgeBase.objects.filter(name="kept in B").count() == 1


@contextlib.contextmanager
def _one_idle_pooled_connection() -> Iterator[None]:
    """The pool hands out one connection again and again: the others idle in it are held aside."""
    connection.ensure_connection()
    connection.close()
    pool = connection.pool  # type: ignore[attr-defined] # the PostgreSQL backend's, not in the stubs
    held = [pool.getconn() for _ in range(pool.get_stats()["pool_available"] - 1)]
    try:
        yield
    finally:
        connection.close()
        for extra in held:
            pool.putconn(extra)


def _read(organization: Organization) -> tuple[list[str], int]:
    """The organization's knowledge bases, read on a connection taken from the pool, and how many
    `SET search_path` that took."""
    connection.close()  # back to the pool: django-tenants forgets the path the session has
    tenant_connection().set_tenant(organization)
    with CaptureQueriesContext(connection) as queries:
        names = list(KnowledgeBase.objects.values_list("name", flat=True))
    return names, sum(query["sql"].startswith("SET search_path") for query in queries)


@pytest.mark.integration
def test_a_pooled_session_keeps_its_path_and_a_path_set_inside_a_transaction_is_not_trusted(
    live_db: LiveDb,
) -> None:
    """Taken from the pool again, a connection whose session already has the organization's path
    is sent no `SET search_path`; every read lands in its own organization's schema. A path set
    inside a transaction may be rolled back, so it is set again the next time."""
    a, b = live_db.organization(slug="path-a"), live_db.organization(slug="path-b")
    for organization in (a, b):
        with schema_context(organization.schema_name):
            KnowledgeBase.objects.create(name=f"of {organization.slug}", embedding_model="simulated-embedding")
    with _one_idle_pooled_connection():
        connection.ensure_connection()
        session = connection.connection
        assert _read(a) == (["of path-a"], 1)
        assert _read(a) == (["of path-a"], 0)  # the same session, still on A's path
        assert _read(b) == (["of path-b"], 1)
        assert _read(a) == (["of path-a"], 1)
        connection.close()
        with contextlib.suppress(Abort), transaction.atomic():
            tenant_connection().set_tenant(b)
            assert list(KnowledgeBase.objects.values_list("name", flat=True)) == ["of path-b"]
            raise Abort  # PostgreSQL reverts the SET: the session is back on A's path
        assert _read(b) == (["of path-b"], 1)
        assert _read(b) == (["of path-b"], 0)
        assert _read(a) == (["of path-a"], 1)
        assert connection.connection is session  # every read above was on this one session
