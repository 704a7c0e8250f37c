"""Helpers for tests of the audit log: events are inserted unchained, and the chainer links them
after commit; tests that look at the chain run the chainer themselves."""

from __future__ import annotations

from typing import Any

from django.db import connection

from apps.audit.models import AuditEvent
from apps.audit.services import audit_chain_link
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization


def chained(organization: Organization, *events: AuditEvent) -> list[AuditEvent]:
    """Run the chainer for `organization` (as its task would after commit), then reload `events`
    with their chain fields."""
    audit_chain_link(organization=organization)
    with organization_schema(organization):
        by_id = AuditEvent.objects.in_bulk([event.pk for event in events])
    return [by_id[event.pk] for event in events]


def sql(statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []
