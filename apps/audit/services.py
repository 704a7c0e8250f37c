from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import kombu.exceptions
import redis
from celery import current_app
from django.db import connection, models, transaction

from apps.accounts.principals import Principal
from apps.audit.chain import GENESIS_HASH, ChainFields, canonical_metadata, event_hash
from apps.audit.models import AuditEvent
from apps.billing.selectors import entitlement_require
from apps.tenants.connection import organization_schema
from cognitionos.redis import redis_client

if TYPE_CHECKING:
    from apps.tenants.models import Organization

logger = logging.getLogger(__name__)

# First key of the chainer's transaction-level advisory lock; the second is the schema's audit table
# (its oid), so each organization has its own lock and no two organizations share one.
AUDIT_CHAIN_LOCK_CLASS = 0x0A0D17
# Events linked per chainer transaction: the lock is held for one batch (a few milliseconds).
AUDIT_CHAIN_BATCH = 1000
# "A chainer run is on its way" for one organization: set by the first commit that finds it unset,
# cleared by the run before it reads. Expires in case the task is lost (the beat sweep chains anyway).
AUDIT_CHAIN_PENDING_SECONDS = 60
# A run starts this long after the commit that asked for it, so the commits of that moment share it
# (one task sent per organization per quarter second at most, not one per event): sending a task
# costs a request about as much as its own audit INSERT.
AUDIT_CHAIN_DELAY_SECONDS = 0.25
AUDIT_CHAIN_TASK = "apps.audit.tasks.audit_chain_tenant"

# Three statements in one round trip: the lock, then the head and the unchained events, each read by
# a statement of its own once the lock is held (a statement's snapshot is taken when it starts, so
# one that waited for the lock would see a stale head), so a run that waited sees what the run
# before it committed.
_LOCK_HEAD_UNCHAINED_SQL = """
    SELECT pg_advisory_xact_lock(%s, 'audit_auditevent'::regclass::oid::int);
    SELECT sequence, hash FROM audit_auditevent WHERE sequence IS NOT NULL ORDER BY sequence DESC LIMIT 1;
    SELECT id, occurred_at, actor_kind, actor_id, actor_label, action, target_type, target_id, target_label,
           metadata::text
    FROM audit_auditevent WHERE sequence IS NULL ORDER BY id LIMIT %s
"""
_LINK_SQL = """
    UPDATE audit_auditevent AS event
    SET sequence = linked.sequence, previous_hash = linked.previous_hash, hash = linked.hash
    FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[]) AS linked(id, sequence, previous_hash, hash)
    WHERE event.id = linked.id AND event.sequence IS NULL
"""


def audit_record(
    *,
    organization: Organization,
    actor: Principal,
    action: str,
    target: models.Model | None = None,
    metadata: dict[str, Any] | None = None,
) -> AuditEvent:
    """Write an event to the organization's audit log, in the caller's transaction.

    The event is inserted unchained (no lock: concurrent writers of one organization don't wait for
    each other); once the transaction commits, the chainer links it into the hash chain
    (`audit_chain_link`, scheduled here on commit, and the beat sweep). An event of a transaction
    that rolls back never existed, so it is never chained.
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
        event.save(force_insert=True)  # occurred_at: the database's clock, returned by the insert
        organization_id = organization.pk
        transaction.on_commit(lambda: audit_chain_schedule(organization_id=organization_id))
    return event


def audit_chain_schedule(*, organization_id: int) -> None:
    """Make sure a chainer run for the organization is on its way, `AUDIT_CHAIN_DELAY_SECONDS` from
    now: one task per burst of commits, not one per event. Runs after the commit, so a failure here
    must not fail the request (which already happened): it is logged, and the beat sweep chains the
    event within its period."""
    key = audit_chain_pending_key(organization_id)
    try:
        if redis_client().set(key, "1", nx=True, ex=AUDIT_CHAIN_PENDING_SECONDS):
            try:
                # By name: the audit app sits below tenancy and doesn't import its task module.
                current_app.send_task(
                    AUDIT_CHAIN_TASK, kwargs={"tenant_id": organization_id}, countdown=AUDIT_CHAIN_DELAY_SECONDS
                )
            except BaseException:
                redis_client().delete(key)
                raise
    except (redis.RedisError, kombu.exceptions.KombuError, OSError):
        logger.warning("audit chainer not scheduled for organization %s; the sweep will chain", organization_id)


def audit_chain_pending_key(organization_id: int) -> str:
    return f"audit:chain-pending:{organization_id}"


def audit_chain_run(*, organization: Organization) -> int:
    """The task's body: clear the pending flag, then link. Cleared before the read, so an event
    committed after this read sets the flag again and gets a run of its own."""
    redis_client().delete(audit_chain_pending_key(organization.pk))
    return audit_chain_link(organization=organization)


def audit_chain_link(*, organization: Organization, batch_size: int = AUDIT_CHAIN_BATCH) -> int:
    """Link the organization's committed, unchained events into its hash chain, in id order, in
    batches of `batch_size`, each in a short transaction of its own under the organization's chain
    lock. Returns how many events it linked.

    Events are appended after the chain's head and never inserted before an already-chained one,
    so an event committed late with an id lower than chained ones is simply linked after them.
    Idempotent and safe to run concurrently: a second run waits for the lock, then finds nothing
    (or only what committed since) to link.
    """
    linked = 0
    with organization_schema(organization):
        while True:
            with transaction.atomic():
                count = _link_batch(batch_size)
            linked += count
            if count < batch_size:
                return linked


def _link_batch(batch_size: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_HEAD_UNCHAINED_SQL, [AUDIT_CHAIN_LOCK_CLASS, batch_size])
        cursor.nextset()
        head = cursor.fetchone()
        cursor.nextset()
        rows = cursor.fetchall()
        if not rows:
            return 0
        sequence, previous_hash = head if head is not None else (0, GENESIS_HASH)
        ids, sequences, previous_hashes, hashes = [], [], [], []
        for row in rows:
            sequence += 1
            digest = event_hash(
                ChainFields(
                    sequence=sequence,
                    occurred_at=row[1],
                    actor_kind=row[2],
                    actor_id=row[3],
                    actor_label=row[4],
                    action=row[5],
                    target_type=row[6],
                    target_id=row[7],
                    target_label=row[8],
                    metadata=json.loads(row[9]),  # as the ORM decodes it for `audit verify`
                    previous_hash=previous_hash,
                )
            )
            ids.append(row[0])
            sequences.append(sequence)
            previous_hashes.append(previous_hash)
            hashes.append(digest)
            previous_hash = digest
        cursor.execute(_LINK_SQL, [ids, sequences, previous_hashes, hashes])
        if cursor.rowcount != len(ids):  # someone linked without the lock: refuse to fork the chain
            raise RuntimeError(f"audit chain: linked {cursor.rowcount} of {len(ids)} events; another writer?")
        return len(ids)


def audit_export_start(
    *, organization: Organization, actor: Principal, export_format: str, filters: dict[str, str]
) -> AuditEvent:
    """Record that `actor` exported the audit log (committed before any row is sent, so an export cut
    short is recorded too). The export covers the events before this one."""
    entitlement_require(organization, "audit_export")
    with transaction.atomic():
        return audit_record(
            organization=organization,
            actor=actor,
            action="audit.exported",
            metadata={"format": export_format, "filters": filters},
        )
