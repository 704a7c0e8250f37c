"""TENANT_LIMIT_SET_CALLS is on: the search path is set once per connection and tenant. These prove
that a rollback can never leave a connection reading another organization's schema (django-tenants
#1262)."""

from __future__ import annotations

from django.db import connection, transaction

from apps.knowledge.models import KnowledgeBase
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization


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
