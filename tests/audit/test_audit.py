from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from django_tenants.utils import schema_context

from apps.accounts.principals import Principal
from apps.audit.models import AuditEvent
from apps.audit.services import audit_record
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import public_organization

ALICE = Principal(kind="user", id="42", label="alice@example.com")


def test_audit_record_writes_to_the_organization_schema(two_tenants: tuple[Organization, Organization]) -> None:
    tenant_a, tenant_b = two_tenants
    event = audit_record(organization=tenant_a, actor=ALICE, action="widget.renamed", metadata={"to": "gizmo"})
    assert tenant_connection().schema_name == "public"  # the caller's schema is restored
    with schema_context(tenant_a.schema_name):
        stored = AuditEvent.objects.get(pk=event.pk)
        assert (stored.actor_kind, stored.actor_id, stored.actor_label) == ("user", "42", "alice@example.com")
        assert stored.metadata == {"to": "gizmo"} and stored.occurred_at is not None
    with schema_context(tenant_b.schema_name):
        assert not AuditEvent.objects.filter(action="widget.renamed").exists()


def test_audit_record_names_its_target(tenant: Organization) -> None:
    event = audit_record(organization=tenant, actor=ALICE, action="organization.viewed", target=tenant)
    assert (event.target_type, event.target_id, event.target_label) == (
        "tenants.Organization",
        str(tenant.pk),
        "tenant-a",
    )


def test_audit_events_are_append_only(tenant: Organization) -> None:
    event = audit_record(organization=tenant, actor=ALICE, action="probe")
    with pytest.raises(DatabaseError, match="append-only: UPDATE refused"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(action="tampered")
    with pytest.raises(DatabaseError, match="append-only: DELETE refused"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(DatabaseError, match="append-only: TRUNCATE refused"), transaction.atomic():
        connection.cursor().execute("TRUNCATE audit_auditevent")
    assert AuditEvent.objects.get(pk=event.pk).action == "probe"


def test_audit_refuses_the_public_schema(db: None) -> None:
    with pytest.raises(ValueError, match="public schema"):
        audit_record(organization=public_organization(), actor=ALICE, action="probe")
