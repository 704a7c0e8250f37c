"""Data export (GDPR): everything an organization has, as JSON lines per table in a zip, built as
durable work (apps.work) and downloadable once by a signed, expiring link.

The zip holds
- `tenant/<table>.jsonl`: every table of the organization's schema (its own exports' bytes aside),
- `public/<table>.jsonl`: its rows of the shared schema: the organization row and every table with a
  foreign key to it (domains, memberships with the member's email, API keys' metadata, SSO settings,
  plan periods, subscription, Stripe customer, usage rollups...), found from the catalog so that a
  table added later is exported without a change here,
- `manifest.json`: per file its table, row count, size and SHA-256; the schema's migration state;
  the columns left out and why; when it was made,
- `SHA256SUMS`: the checksum of every file, manifest included (`sha256sum -c SHA256SUMS`).

Rows are encoded by PostgreSQL (`to_jsonb`): exact values, bytea as `\\x` hex, vectors as text.
Columns holding secrets (names with a segment `secret`, `password`, `token`, `ciphertext`,
`encrypted`, `salt` or `private`) are left out and listed in the manifest: an export is a file that
travels, and no secret of the organization (key hashes, webhook secrets, verification tokens) goes
with it.

Bounded: each table is read through a server-side cursor, DATA_EXPORT_BATCH_ROWS rows per round
trip, and written straight into a temporary zip; the build stops as a failure (`export_too_large`)
as soon as the zip passes DATA_EXPORT_MAX_BYTES. The finished zip is stored in the organization's
own schema (DataExportPart, 1 MiB rows): no shared volume between web and worker pods, and it goes
with the schema when the organization is deleted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.core import signing
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from apps.accounts.principals import Principal
from apps.audit.models import DataExport, DataExportPart
from apps.audit.services import audit_record
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from apps.work.models import UNFINISHED, WorkStatus
from apps.work.principals import principal_fields
from apps.work.progress import progress_publish
from apps.work.registry import WorkKind
from apps.work.services import work_admit, work_fail, work_finish
from cognitionos.refusals import Refusal

logger = logging.getLogger(__name__)

FORMAT = "cognitionos-export"
FORMAT_VERSION = 1
PART_BYTES = 1024 * 1024
LINK_SALT = "apps.audit.exports.download"
# The export's own bytes are not exported again (an export would hold the one before it).
SKIPPED_TENANT_TABLES = frozenset({DataExportPart._meta.db_table})
_SECRET_SEGMENTS = frozenset({"secret", "password", "token", "ciphertext", "encrypted", "salt", "private"})
OMITTED_RULE = f"columns holding secrets (name segments: {', '.join(sorted(_SECRET_SEGMENTS))})"
ORGANIZATION_TABLE = Organization._meta.db_table
USER_TABLE = "accounts_user"


# -- refusals -------------------------------------------------------------------------------------


class ExportRefused(Refusal):
    def __init__(self, message: str, *, code: str, http_status: int) -> None:
        super().__init__(message)
        self.code, self.http_status = code, http_status


def _not_found() -> ExportRefused:
    return ExportRefused("no such export in this organization", code="not_found", http_status=404)


def _gone(message: str) -> ExportRefused:
    return ExportRefused(message, code="export_gone", http_status=410)


class _Stopped(Exception):
    """The run no longer owns its row (taken over after a lost heartbeat): stop, record nothing."""


class ExportTooLarge(Exception):
    pass


# -- starting -------------------------------------------------------------------------------------


def _admin_required(actor: Principal) -> None:
    # The edge checks the declared permission; a principal with resolved permissions is checked here too.
    if actor.permissions is not None and "admin" not in actor.permissions:
        raise ExportRefused(
            "exporting the organization's data needs the admin permission (the Owner or Admin role)",
            code="permission_denied",
            http_status=403,
        )


def organization_export_start(*, organization: Organization, actor: Principal) -> DataExport:
    """Queue an export of everything the organization has; one at a time per organization."""
    if organization.is_public:
        raise ValueError("exports belong to an organization, not the public schema")
    _admin_required(actor)
    with transaction.atomic(), organization_schema(organization):
        with connection.cursor() as cursor:
            # One export at a time per organization (the lock is per schema, for this transaction).
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('audit_dataexport:' || current_schema()))")
        running = DataExport.objects.filter(status__in=UNFINISHED).first()
        if running is not None:
            raise ExportRefused(
                f"export {running.pk} is still being built; wait for it to finish",
                code="export_in_progress",
                http_status=409,
            )
        export = DataExport.objects.create(**principal_fields(actor))
        audit_record(organization=organization, actor=actor, action="data_export.started", target=export)
        progress_publish(organization=organization, topic=EXPORT.name, object_id=export.pk)
        work_admit(organization=organization, kind=EXPORT, waiting=True)
    return export


# -- building -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One file of the zip: the table it comes from and the query that reads its rows as JSON."""

    path: str
    schema: str
    table: str
    query: sql.Composable
    params: tuple[Any, ...]
    omitted: tuple[str, ...]


def _secret(column: str) -> bool:
    return any(segment in _SECRET_SEGMENTS for segment in re.split(r"[_\W]+", column.lower()))


def _columns(schema: str, table: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = (quote_ident(%s) || '.' || quote_ident(%s))::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            [schema, table],
        )
        return [row[0] for row in cursor.fetchall()]


def _row_json(omitted: list[str]) -> sql.Composable:
    return sql.SQL("(to_jsonb(t) - {}::text[])").format(sql.Literal(omitted))


def tenant_tables(schema: str) -> list[str]:
    """Every table of the schema (partitioned ones once, by their parent)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname",
            [schema],
        )
        return [row[0] for row in cursor.fetchall()]


def organization_references() -> list[tuple[str, str]]:
    """(table, column) of every public table with a one-column foreign key to organizations."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, a.attname
              FROM pg_constraint k
              JOIN pg_class c ON c.oid = k.conrelid
              JOIN pg_namespace n ON n.oid = c.relnamespace
              JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
             WHERE k.contype = 'f' AND n.nspname = 'public' AND cardinality(k.conkey) = 1
               AND k.confrelid = 'public.tenants_organization'::regclass
             ORDER BY c.relname, a.attname
            """
        )
        return [(row[0], row[1]) for row in cursor.fetchall()]


def _user_column(table: str) -> bool:
    """Whether the public table has a `user_id` pointing at the users' table (its rows name a person)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT 1 FROM pg_constraint k
              JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
             WHERE k.contype = 'f' AND k.conrelid = ('public.' || quote_ident(%s))::regclass
               AND k.confrelid = ('public.' || quote_ident(%s))::regclass AND a.attname = 'user_id'
            """,
            [table, USER_TABLE],
        )
        return cursor.fetchone() is not None


def export_sources(organization: Organization) -> list[Source]:
    """The files of an export, in order: the tenant schema's tables, then the public rows."""
    schema = organization.schema_name
    sources = []
    for table in tenant_tables(schema):
        if table in SKIPPED_TENANT_TABLES:
            continue
        omitted = [column for column in _columns(schema, table) if _secret(column)]
        query = sql.SQL("SELECT {}::text FROM {}.{} AS t").format(
            _row_json(omitted), sql.Identifier(schema), sql.Identifier(table)
        )
        sources.append(Source(f"tenant/{table}.jsonl", schema, table, query, (), tuple(omitted)))
    public: list[tuple[str, str]] = [(ORGANIZATION_TABLE, "id"), *organization_references()]
    seen: set[str] = set()
    for table, column in public:
        omitted = [name for name in _columns("public", table) if _secret(name)]
        row: sql.Composable = _row_json(omitted)
        join: sql.Composable = sql.SQL("")
        if _user_column(table):
            # Memberships, keys bound to a person: the person's email beside the id.
            row = sql.SQL("({} || jsonb_build_object('user_email', u.email))").format(row)
            join = sql.SQL(" LEFT JOIN public.{} AS u ON u.id = t.user_id").format(sql.Identifier(USER_TABLE))
        query = sql.SQL("SELECT {}::text FROM public.{} AS t{} WHERE t.{} = %s").format(
            row, sql.Identifier(table), join, sql.Identifier(column)
        )
        # A table referring to organizations twice gets one file per column.
        path = f"public/{table}.jsonl" if table not in seen else f"public/{table}.{column}.jsonl"
        seen.add(table)
        sources.append(Source(path, "public", table, query, (organization.pk,), tuple(omitted)))
    return sources


@dataclass
class Written:
    path: str
    schema: str
    table: str
    rows: int
    bytes: int
    sha256: str
    omitted: tuple[str, ...]

    def as_manifest(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "path": self.path,
            "schema": "public" if self.schema == "public" else "tenant",
            "table": self.table,
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }
        if self.omitted:
            entry["omitted_columns"] = list(self.omitted)
        return entry


def _write_source(archive: zipfile.ZipFile, file: IO[bytes], source: Source, max_bytes: int) -> Written:
    """Stream one table's rows into the zip, a batch at a time, through a server-side cursor."""
    digest = hashlib.sha256()
    rows = size = 0
    batch = max(1, int(settings.DATA_EXPORT_BATCH_ROWS))
    with archive.open(source.path, "w", force_zip64=True) as member, transaction.atomic():
        cursor = connection.chunked_cursor()
        try:
            cursor.execute(source.query.as_string(), source.params)
            while lines := cursor.fetchmany(batch):
                data = "".join(line[0] + "\n" for line in lines).encode()
                member.write(data)
                digest.update(data)
                rows += len(lines)
                size += len(data)
                if file.tell() > max_bytes:
                    raise ExportTooLarge
        finally:
            cursor.close()
    return Written(source.path, source.schema, source.table, rows, size, digest.hexdigest(), source.omitted)


def _migration_state(organization: Organization) -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("SELECT app, name FROM {}.django_migrations ORDER BY app, name")
            .format(sql.Identifier(organization.schema_name))
            .as_string()
        )
        applied = [f"{app}.{name}" for app, name in cursor.fetchall()]
    return {"fingerprint": organization.migration_state, "applied": applied}


def _owned(export: DataExport) -> Any:
    return DataExport.objects.filter(pk=export.pk, status=WorkStatus.RUNNING, attempts=export.attempts)


def _progress(organization: Organization, export: DataExport, **values: Any) -> None:
    if not _owned(export).update(**values):
        raise _Stopped
    progress_publish(organization=organization, topic=EXPORT.name, object_id=export.pk)


def _too_large_message(max_bytes: int) -> str:
    return (
        f"the export passed the limit of {max_bytes:,} bytes (DATA_EXPORT_MAX_BYTES) and was stopped; "
        "ask the operators for a larger limit, or delete data you no longer need and export again"
    )


def _export_run(organization: Organization, export: DataExport) -> None:
    max_bytes = int(settings.DATA_EXPORT_MAX_BYTES)
    with organization_schema(organization):
        try:
            _export_build(organization, export, max_bytes)
        except _Stopped:
            logger.info("data export %s stopped (taken over or ended)", export.pk)
        except ExportTooLarge:
            work_fail(
                organization=organization,
                kind=EXPORT,
                item=export,
                error_class="export_too_large",
                message=_too_large_message(max_bytes),
            )


def _export_build(organization: Organization, export: DataExport, max_bytes: int) -> None:
    # A run after a dead worker starts afresh: the parts of the run before are not complete.
    DataExportPart.objects.filter(export=export).delete()
    sources = export_sources(organization)
    _progress(organization, export, tables_total=len(sources), tables_done=0, rows_done=0)
    created_at = timezone.now()
    written: list[Written] = []
    with tempfile.TemporaryFile(prefix="cognitionos-export-") as file:
        with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            for source in sources:
                written.append(_write_source(archive, file, source, max_bytes))
                _progress(organization, export, tables_done=len(written), rows_done=sum(item.rows for item in written))
            manifest = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "export_id": str(export.pk),
                "created_at": created_at.isoformat(),
                "organization": {
                    "id": organization.pk,
                    "slug": organization.slug,
                    "name": organization.name,
                    "schema": organization.schema_name,
                    "plan": organization.plan.code,
                },
                "schema_migration_state": _migration_state(organization),
                "encoding": "one JSON object per line, UTF-8, as PostgreSQL's to_jsonb encodes the row",
                "omitted_column_rule": OMITTED_RULE,
                "files": [item.as_manifest() for item in written],
            }
            manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
            archive.writestr("manifest.json", manifest_bytes)
            sums = [f"{item.sha256}  {item.path}\n" for item in written]
            sums.append(f"{hashlib.sha256(manifest_bytes).hexdigest()}  manifest.json\n")
            archive.writestr("SHA256SUMS", "".join(sums))
        size = file.tell()
        if size > max_bytes:
            raise ExportTooLarge
        file.seek(0)
        _export_store(organization, export, file, size=size, manifest=manifest)


def _export_store(
    organization: Organization, export: DataExport, file: IO[bytes], *, size: int, manifest: dict[str, Any]
) -> None:
    """The zip into the schema, and success, in one transaction."""
    digest = hashlib.sha256()
    with transaction.atomic():
        if not _owned(export).select_for_update().exists():
            raise _Stopped
        number = 0
        while data := file.read(PART_BYTES):
            digest.update(data)
            DataExportPart.objects.create(export=export, number=number, data=data)
            number += 1
        summary = {
            "files": len(manifest["files"]),
            "rows": sum(entry["rows"] for entry in manifest["files"]),
            "schema_migration_state": manifest["schema_migration_state"]["fingerprint"],
            "created_at": manifest["created_at"],
        }
        if not work_finish(
            organization=organization,
            kind=EXPORT,
            item=export,
            status=WorkStatus.SUCCEEDED,
            values={
                "size_bytes": size,
                "sha256": digest.hexdigest(),
                "manifest": summary,
                "expires_at": timezone.now() + dt.timedelta(seconds=settings.DATA_EXPORT_LINK_SECONDS),
            },
            attempt=export.attempts,
        ):
            raise _Stopped


def _export_finished(organization: Organization, export: DataExport) -> None:
    action = "data_export.completed" if export.status == WorkStatus.SUCCEEDED else f"data_export.{export.status}"
    metadata: dict[str, Any] = {"requested_by": export.principal_label}
    if export.status == WorkStatus.SUCCEEDED:
        metadata.update(size_bytes=export.size_bytes, sha256=export.sha256, rows=export.rows_done)
    else:
        metadata.update(error_class=export.error_class)
    actor = Principal.system("data export")
    audit_record(organization=organization, actor=actor, action=action, target=export, metadata=metadata)


EXPORT = WorkKind(
    name="data_export",
    model=DataExport,
    execute=_export_run,
    on_finished=_export_finished,
    # One export at a time per organization (the start refuses a second one too).
    cap=lambda organization: 1,
)


# -- the download ---------------------------------------------------------------------------------


def data_export_link_token(*, organization: Organization, export: DataExport) -> str:
    """The signed token of the export's download link: names the organization and the export, and
    is refused after DATA_EXPORT_LINK_SECONDS (and after its one use)."""
    return signing.dumps({"o": organization.pk, "e": str(export.pk)}, salt=LINK_SALT)


def data_export_download_claim(
    *, organization: Organization, actor: Principal, export_id: Any, token: str
) -> DataExport:
    """Take the one download the link allows: 404 for a link of another organization or export (or
    a forged one), 410 once used, expired or purged, 409 while the export is not ready."""
    try:
        claims = signing.loads(token, salt=LINK_SALT, max_age=settings.DATA_EXPORT_LINK_SECONDS)
    except signing.SignatureExpired:
        raise _gone("this download link has expired; start a new export") from None
    except signing.BadSignature:
        raise _not_found() from None
    if not isinstance(claims, dict) or claims.get("o") != organization.pk or claims.get("e") != str(export_id):
        raise _not_found()
    with transaction.atomic(), organization_schema(organization):
        export = DataExport.objects.select_for_update().filter(pk=export_id).first()
        if export is None:
            raise _not_found()
        if export.status != WorkStatus.SUCCEEDED:
            raise ExportRefused("the export is not ready to download", code="export_not_ready", http_status=409)
        if export.downloaded_at is not None:
            raise _gone("this export was downloaded already; a link works once: start a new export")
        if export.purged_at is not None or (export.expires_at is not None and export.expires_at <= timezone.now()):
            raise _gone("this export has expired; start a new export")
        export.downloaded_at = timezone.now()
        export.downloaded_by = actor.label[:254]
        export.save(update_fields=["downloaded_at", "downloaded_by"])
        audit_record(
            organization=organization,
            actor=actor,
            action="data_export.downloaded",
            target=export,
            metadata={"size_bytes": export.size_bytes, "sha256": export.sha256},
        )
    return export


def data_export_chunks(*, organization: Organization, export: DataExport) -> Iterator[bytes]:
    """The zip's bytes, one part (1 MiB) per query; the parts are deleted once all were sent."""
    number = 0
    while True:
        with organization_schema(organization):
            data = (
                DataExportPart.objects.filter(export_id=export.pk, number=number).values_list("data", flat=True).first()
            )
        if data is None:
            break
        yield bytes(data)
        number += 1
    with organization_schema(organization):
        data_export_parts_delete(export_id=export.pk)


def data_export_parts_delete(*, export_id: Any) -> None:
    with transaction.atomic():
        DataExportPart.objects.filter(export_id=export_id).delete()
        DataExport.objects.filter(pk=export_id, purged_at__isnull=True).update(purged_at=timezone.now())


def data_exports_sweep(*, organization: Organization, now: dt.datetime | None = None) -> int:
    """Upkeep (the beat's sweep duty): delete the bytes of exports downloaded, expired or failed."""
    now = now or timezone.now()
    done = DataExport.objects.filter(purged_at__isnull=True).exclude(status__in=UNFINISHED)
    stale = (
        done.exclude(status=WorkStatus.SUCCEEDED)
        | done.filter(downloaded_at__isnull=False)
        | done.filter(expires_at__lte=now)
    )
    ids = list(stale.values_list("pk", flat=True)[:100])
    for export_id in ids:
        data_export_parts_delete(export_id=export_id)
    return len(ids)
