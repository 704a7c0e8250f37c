import uuid

from django.db import models
from django.db.models.functions import Now

from apps.work.models import WorkItem, work_item_constraints


class AuditEvent(models.Model):
    """One thing that changed, in the organization's own schema. Rows are never deleted, and never
    updated except once: the chainer (apps.audit.services.audit_chain_link) sets `sequence`,
    `previous_hash` and `hash` of an event inserted without them (a database trigger refuses
    anything else). Chained events carry the hash of the one before (apps.audit.chain): `sequence`
    numbers them 1, 2, 3, ... in chain order, one chain per schema."""

    # Null until the chainer links the event (after its transaction commits); then set once.
    sequence = models.BigIntegerField(editable=False, null=True)
    occurred_at = models.DateTimeField(db_default=Now(), db_index=True)
    actor_kind = models.CharField(max_length=20)
    actor_id = models.CharField(max_length=64, blank=True, default="")
    actor_label = models.CharField(max_length=254)
    action = models.CharField(max_length=100, db_index=True)
    target_type = models.CharField(max_length=100, blank=True, default="")
    target_id = models.CharField(max_length=64, blank=True, default="")
    target_label = models.CharField(max_length=254, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    previous_hash = models.CharField(max_length=64, editable=False, null=True)
    hash = models.CharField(max_length=64, editable=False, null=True)

    class Meta:
        # id: the insert's order, defined for chained and unchained events alike.
        ordering = ("-id",)
        indexes = [
            # The chainer's read: unchained events by id; stays as small as the chainer's backlog.
            models.Index(fields=["id"], condition=models.Q(sequence__isnull=True), name="audit_event_unchained"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(actor_kind__in=["user", "api_key", "operator", "system"]),
                name="audit_event_actor_kind_valid",
            ),
            # Two writers that bypassed the chain lock can't both append event N: the chain can't fork.
            # (Unchained events' null sequences don't collide: NULLs are distinct.)
            models.UniqueConstraint(fields=["sequence"], name="audit_event_sequence_unique"),
            # Chained or not, never half-chained.
            models.CheckConstraint(
                condition=models.Q(sequence__isnull=True, previous_hash__isnull=True, hash__isnull=True)
                | models.Q(sequence__isnull=False, previous_hash__isnull=False, hash__isnull=False),
                name="audit_event_chained_whole",
            ),
            models.CheckConstraint(condition=models.Q(sequence__gte=1), name="audit_event_sequence_positive"),
            models.CheckConstraint(
                condition=models.Q(hash__regex=r"^[0-9a-f]{64}$", previous_hash__regex=r"^[0-9a-f]{64}$"),
                name="audit_event_hashes_hex",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action}"


# -- data export (GDPR): the organization's whole data as a zip, built as durable work -------------


class DataExport(WorkItem):
    """One export of everything the organization has (apps.audit.exports): built by a worker
    (queued -> running -> succeeded | failed), then downloadable once, by a signed link, until
    `expires_at`. The zip itself is kept in `DataExportPart` rows of this schema."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Progress: tables written of the tables to write, rows written so far.
    tables_total = models.PositiveIntegerField(default=0)
    tables_done = models.PositiveIntegerField(default=0)
    rows_done = models.BigIntegerField(default=0)
    # The finished zip: its size, its SHA-256 (hex) and the manifest's summary.
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True, default="")
    manifest = models.JSONField(default=dict, blank=True)
    # Set with success; after it the link is refused (410) and the parts are deleted.
    expires_at = models.DateTimeField(null=True, blank=True)
    # Set by the one download the link allows (410 for any later use).
    downloaded_at = models.DateTimeField(null=True, blank=True)
    downloaded_by = models.CharField(max_length=254, blank=True, default="")
    # The parts were deleted (downloaded, expired, or the export failed).
    purged_at = models.DateTimeField(null=True, blank=True)

    class Meta(WorkItem.Meta):
        ordering = ("-created_at",)
        constraints = [
            *work_item_constraints(),
            models.CheckConstraint(
                condition=models.Q(tables_done__lte=models.F("tables_total")),
                name="audit_dataexport_tables_done_at_most_total",
            ),
            models.CheckConstraint(
                condition=models.Q(downloaded_at__isnull=True) | models.Q(status="succeeded"),
                name="audit_dataexport_downloaded_only_succeeded",
            ),
            models.CheckConstraint(
                condition=models.Q(sha256="") | models.Q(sha256__regex=r"^[0-9a-f]{64}$"),
                name="audit_dataexport_sha256_hex",
            ),
        ]

    def __str__(self) -> str:
        return f"export {self.pk}"


class DataExportPart(models.Model):
    """A slice of an export's zip, in order (`number` from 0): the file lives in the organization's
    own schema, so it is backed up, replicated and dropped with it, with no shared volume."""

    export = models.ForeignKey(DataExport, on_delete=models.CASCADE, related_name="parts")
    number = models.PositiveIntegerField()
    data = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["export", "number"], name="audit_dataexportpart_unique_number"),
        ]

    def __str__(self) -> str:
        return f"{self.export_id}#{self.number}"
