"""Reads of the audit log: the chain's verification, and events in batches for exports."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import connection
from django.db.models import QuerySet

from apps.audit.chain import GENESIS_HASH, ChainFields, event_hash
from apps.audit.models import AuditEvent, DataExport
from apps.tenants.connection import organization_schema

if TYPE_CHECKING:
    from apps.tenants.models import Organization

VERIFY_BATCH = 5000
EXPORT_BATCH = 2000
# An event still unchained this long after it was written means the chainer isn't running (it
# normally links an event within seconds of its commit; the beat sweep within a minute).
UNCHAINED_MAX_AGE_SECONDS = 300
# Every field, in the order of the hash's inputs (id first, the stored hash last); exports use it too.
EVENT_FIELDS = (
    "id",
    "sequence",
    "occurred_at",
    "actor_kind",
    "actor_id",
    "actor_label",
    "action",
    "target_type",
    "target_id",
    "target_label",
    "metadata",
    "previous_hash",
    "hash",
)


@dataclass(frozen=True)
class ChainBreak:
    """The first event whose link doesn't hold: `field` is what differs from what the chain expects."""

    event_id: int
    sequence: int
    field: str  # "sequence", "previous_hash", "hash" or "anchor"
    expected: str
    stored: str


@dataclass(frozen=True)
class Unchained:
    """Events written but not linked into the chain yet."""

    count: int
    stale: int  # of them, written longer than the allowed age ago: the chainer is stuck
    first_id: int | None  # the lowest id: the next one the chainer links
    oldest_age_seconds: float | None  # since the earliest occurred_at among them


@dataclass(frozen=True)
class ChainReport:
    count: int  # events checked (up to the first break)
    head_hash: str  # the last good event's hash (the genesis hash for an empty log)
    broken: ChainBreak | None
    unchained: Unchained = Unchained(0, 0, None, None)

    @property
    def ok(self) -> bool:
        """The chain holds (events not chained yet don't break it; see `stuck`)."""
        return self.broken is None

    @property
    def stuck(self) -> bool:
        return self.unchained.stale > 0


def audit_event_chain_fields(event: AuditEvent) -> ChainFields:
    """The hashed fields of a chained event, as the model holds them."""
    if event.sequence is None or event.previous_hash is None:
        raise ValueError(f"audit event {event.pk} is not chained yet")
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


def audit_chain_verify(
    *,
    organization: Organization,
    anchors: dict[int, str] | None = None,
    batch_size: int = VERIFY_BATCH,
    unchained_max_age: float = UNCHAINED_MAX_AGE_SECONDS,
) -> ChainReport:
    """Walk the organization's chain from its first event, `batch_size` events per query, and stop at
    the first event whose sequence, previous hash or own hash isn't what the chain before it implies.
    Also count the events not chained yet, and those of them older than `unchained_max_age` seconds.

    The chain alone can't show what someone with write access rewrote from some event to the end
    (every hash recomputed), nor events cut off the end: `anchors` (sequence -> hash, heads printed
    by earlier runs and kept elsewhere) can. An anchored event must be there, with that hash.
    """
    with organization_schema(organization):
        # Counted first: an event the chainer links during the walk is then counted at most twice,
        # never missed by both.
        unchained = _unchained(unchained_max_age)
        report = _chain_walk(anchors or {}, batch_size)
    return ChainReport(count=report.count, head_hash=report.head_hash, broken=report.broken, unchained=unchained)


def _unchained(max_age: float) -> Unchained:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*), count(*) FILTER (WHERE occurred_at < clock_timestamp() - make_interval(secs => %s)),
                   min(id), extract(epoch FROM clock_timestamp() - min(occurred_at))
            FROM audit_auditevent WHERE sequence IS NULL
            """,
            [max_age],
        )
        count, stale, first_id, oldest_age = cursor.fetchone()
    return Unchained(count, stale, first_id, float(oldest_age) if oldest_age is not None else None)


def _chain_walk(anchors: dict[int, str], batch_size: int) -> ChainReport:
    expected_sequence, previous_hash, count = 1, GENESIS_HASH, 0
    while True:
        # Keyset batches (never OFFSET): each query reads the next `batch_size` rows of the index.
        rows = list(
            AuditEvent.objects.filter(sequence__gte=expected_sequence)
            .order_by("sequence")
            .values_list(*EVENT_FIELDS)[:batch_size]
        )
        for row in rows:
            event_id, sequence, stored_hash = row[0], row[1], row[12]
            fields = ChainFields(*row[1:12])
            broken = None
            if sequence != expected_sequence:
                broken = ChainBreak(event_id, sequence, "sequence", str(expected_sequence), str(sequence))
            elif fields.previous_hash != previous_hash:
                broken = ChainBreak(event_id, sequence, "previous_hash", previous_hash, fields.previous_hash)
            else:
                computed = event_hash(fields)
                if computed != stored_hash:
                    broken = ChainBreak(event_id, sequence, "hash", computed, stored_hash)
                elif anchors.get(sequence, stored_hash) != stored_hash:
                    broken = ChainBreak(event_id, sequence, "anchor", anchors[sequence], stored_hash)
            if broken is not None:
                return ChainReport(count=count, head_hash=previous_hash, broken=broken)
            expected_sequence, previous_hash, count = sequence + 1, stored_hash, count + 1
        if len(rows) < batch_size:
            beyond = sorted(sequence for sequence in anchors if sequence >= expected_sequence)
            if beyond:  # the chain ends before an event that was there
                missing = ChainBreak(0, beyond[0], "anchor", anchors[beyond[0]], "(no such event)")
                return ChainReport(count=count, head_hash=previous_hash, broken=missing)
            return ChainReport(count=count, head_hash=previous_hash, broken=None)


def audit_events_batches(
    *, organization: Organization, events: QuerySet[AuditEvent], below_id: int, batch_size: int | None = None
) -> Iterator[list[dict[str, Any]]]:
    """`events` (already filtered) written before event `below_id`, oldest first (by id: chained or
    not yet; the chain's order is their `sequence`), as dicts of every field,
    `batch_size` per query (dicts: building model instances took a third of an export's time).

    Runs where the caller iterates, which for a streamed response is after the request has left the
    organization's schema: each batch enters it again.
    """
    batch_size = batch_size or EXPORT_BATCH
    after = 0
    while True:
        with organization_schema(organization):
            batch = list(events.filter(id__gt=after, id__lt=below_id).order_by("id").values(*EVENT_FIELDS)[:batch_size])
        if batch:
            yield batch
        if len(batch) < batch_size:
            return
        after = batch[-1]["id"]


# -- data exports -----------------------------------------------------------------------------------


def data_export_get(*, organization: Organization, export_id: Any) -> DataExport | None:
    """One export of the organization, or None (another organization's id is simply absent)."""
    with organization_schema(organization):
        return DataExport.objects.filter(pk=export_id).first()


def data_exports_list(*, organization: Organization, limit: int = 20) -> list[DataExport]:
    """The organization's newest exports."""
    with organization_schema(organization):
        return list(DataExport.objects.order_by("-created_at")[:limit])
