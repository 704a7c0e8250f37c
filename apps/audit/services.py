from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models, transaction
from django_tenants.utils import schema_context

from apps.accounts.principals import Principal
from apps.audit.models import AuditEvent
from apps.tenants.connection import tenant_connection

if TYPE_CHECKING:
    from apps.tenants.models import Organization


def audit_record(
    *,
    organization: Organization,
    actor: Principal,
    action: str,
    target: models.Model | None = None,
    metadata: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append an event to the organization's audit log, in the caller's transaction."""
    if organization.schema_name == "public":
        raise ValueError("audit events belong to an organization, not the public schema")
    event = AuditEvent(
        actor_kind=actor.kind,
        actor_id=actor.id or "",
        actor_label=actor.label[:254],
        action=action,
        target_type=target._meta.label if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_label=str(target)[:254] if target is not None else "",
        metadata=metadata or {},
    )
    # No savepoint of its own: an event that can't be written fails the caller's transaction.
    with transaction.atomic(savepoint=False):
        if tenant_connection().schema_name == organization.schema_name:
            event.save()
        else:
            with schema_context(organization.schema_name):
                event.save()
    return event
