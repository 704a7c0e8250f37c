from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.db import connection, models, transaction

from apps.accounts.principals import Principal
from apps.audit.chain import GENESIS_HASH, ChainFields, canonical_metadata, event_hash
from apps.audit.models import AuditEvent
from apps.tenants.connection import organization_schema

if TYPE_CHECKING:
    from apps.tenants.models import Organization

# First key of the chain's transaction-level advisory lock; the second is the schema's audit table
# (its oid), so each organization has its own lock and no two organizations share one.
AUDIT_CHAIN_LOCK_CLASS = 0x0A0D17

# Two statements in one round trip: the head is read by a statement of its own, once the lock is
# held (a statement's snapshot is taken when it starts, so one that both waited for the lock and read
# the head would see a stale head), yet without a round trip of its own while others wait for the lock.
_LOCK_THEN_HEAD_SQL = """
    SELECT pg_advisory_xact_lock(%s, 'audit_auditevent'::regclass::oid::int);
    SELECT clock_timestamp(), head.sequence, head.hash
    FROM (SELECT 1) AS one
    LEFT JOIN LATERAL (SELECT sequence, hash FROM audit_auditevent ORDER BY sequence DESC LIMIT 1) AS head ON true
"""


def audit_record(
    *,
    organization: Organization,
    actor: Principal,
    action: str,
    target: models.Model | None = None,
    metadata: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append an event to the organization's audit log, in the caller's transaction.

    The event is chained to the one before it under the organization's chain lock, which is held
    until the caller's transaction ends: other writers of the same organization wait for it, so
    call this late in long transactions.
    """
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
        # Stored as jsonb reads it back (string keys, lists), so the hash covers what is stored.
        metadata=canonical_metadata(json.loads(json.dumps(metadata or {}))),
    )
    # No savepoint of its own: an event that can't be written fails the caller's transaction.
    with transaction.atomic(savepoint=False), organization_schema(organization):
        _chain_and_insert(event)
    return event


def _chain_and_insert(event: AuditEvent) -> None:
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_THEN_HEAD_SQL, [AUDIT_CHAIN_LOCK_CLASS])
        cursor.nextset()
        # The database's clock, read under the lock: occurred_at never goes back along the chain.
        occurred_at, last_sequence, last_hash = cursor.fetchone()
    event.sequence = (last_sequence or 0) + 1
    event.previous_hash = last_hash or GENESIS_HASH
    event.occurred_at = occurred_at
    event.hash = event_hash(_chain_fields(event))
    event.save(force_insert=True)


def _chain_fields(event: AuditEvent) -> ChainFields:
    return ChainFields(
        sequence=event.sequence,
        occurred_at=event.occurred_at,
        actor_kind=event.actor_kind,
        actor_id=event.actor_id,
        actor_label=event.actor_label,
        action=event.action,
        target_type=event.target_type,
        target_id=event.target_id,
        target_label=event.target_label,
        metadata=event.metadata,
        previous_hash=event.previous_hash,
    )


def audit_export_start(
    *, organization: Organization, actor: Principal, export_format: str, filters: dict[str, str]
) -> AuditEvent:
    """Record that `actor` exported the audit log (committed before any row is sent, so an export cut
    short is recorded too). The export covers the events before this one."""
    with transaction.atomic():
        return audit_record(
            organization=organization,
            actor=actor,
            action="audit.exported",
            metadata={"format": export_format, "filters": filters},
        )
