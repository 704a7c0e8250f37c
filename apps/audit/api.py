"""REST API v1: the organization's audit log, as pages (newest first) and as a streamed export; and
the organization's data export (GDPR): start, follow, download once (apps.audit.exports)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.api.authentication import request_organization, request_principal
from apps.api.errors import ApiError
from apps.api.pagination import CreatedCursorPagination
from apps.audit.exports import (
    data_export_chunks,
    data_export_download_claim,
    data_export_link_token,
    organization_export_start,
)
from apps.audit.filters import AuditEventFilter
from apps.audit.models import AuditEvent, DataExport
from apps.audit.selectors import EVENT_FIELDS, audit_events_batches, data_export_get, data_exports_list
from apps.audit.services import audit_export_start
from apps.rbac.permissions import Permission
from apps.tenants.models import Organization
from apps.work.models import WorkStatus
from cognitionos.long_responses import LongResponsesFull, long_response_begin

EXPORT_FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/jsonl; charset=utf-8"}


class AuditEventOutput(serializers.ModelSerializer[AuditEvent]):
    class Meta:
        model = AuditEvent
        fields = EVENT_FIELDS


class IdCursorPagination(CreatedCursorPagination):
    # By id, the insert's order: events not chained yet (sequence null) are listed too.
    ordering = ("-pk",)  # type: ignore[assignment]  # one key: the id is unique


class AuditEventListApi(ListAPIView[AuditEvent]):
    required_permissions = {"GET": Permission.AUDIT_READ}
    serializer_class = AuditEventOutput
    filterset_class = AuditEventFilter
    pagination_class = IdCursorPagination

    def get_queryset(self) -> QuerySet[AuditEvent]:
        return AuditEvent.objects.all()

    @extend_schema(summary="The organization's audit events, newest first")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        return super().get(request, *args, **kwargs)


class _FormatChoosesTheFile(DefaultContentNegotiation):
    """`?format=` picks the export's file format, not a DRF renderer; errors are answered in JSON."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, str(renderer.media_type)


class AuditExportInput(serializers.Serializer[Any]):
    format = serializers.ChoiceField(choices=sorted(EXPORT_FORMATS))


class AuditEventExportApi(ListAPIView[AuditEvent]):
    required_permissions = {"GET": Permission.AUDIT_READ}
    serializer_class = AuditEventOutput
    filterset_class = AuditEventFilter
    pagination_class = None
    content_negotiation_class = _FormatChoosesTheFile

    def get_queryset(self) -> QuerySet[AuditEvent]:
        return AuditEvent.objects.all()

    @extend_schema(
        summary="Export the audit events (the filters of the list apply), oldest first, streamed",
        parameters=[OpenApiParameter("format", str, enum=sorted(EXPORT_FORMATS), required=True)],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="One row per event, with a header"),
            (200, "application/jsonl"): OpenApiResponse(OpenApiTypes.STR, description="One JSON object per line"),
        },
    )
    # A list view (so the schema and the filter backend treat it as one) that answers with a stream.
    def get(self, request: Request, *args: Any, **kwargs: Any) -> StreamingHttpResponse:  # type: ignore[override]
        data = AuditExportInput(data={"format": request.query_params.get("format", "")})
        data.is_valid(raise_exception=True)
        export_format: str = data.validated_data["format"]
        events = self.filter_queryset(self.get_queryset())  # invalid filters answer 400 here
        try:
            slot = long_response_begin()
        except LongResponsesFull as exc:
            raise ApiError(429, "too_many_streams", str(exc), headers={"Retry-After": str(exc.retry_after)}) from exc
        organization = request_organization(request)
        try:
            export = audit_export_start(
                organization=organization,
                actor=request_principal(request),
                export_format=export_format,
                filters={key: str(value) for key, value in request.query_params.items() if key != "format"},
            )
        except BaseException:
            slot.give_back()
            raise
        lines = _csv_lines if export_format == "csv" else _jsonl_lines
        body = lines(organization=organization, events=events, below_id=export.pk)
        response = StreamingHttpResponse(slot.hold(body), content_type=EXPORT_FORMATS[export_format])
        response["Content-Disposition"] = (
            f'attachment; filename="audit-{organization.slug}-{export.pk}.{export_format}"'
        )
        response["X-Accel-Buffering"] = "no"
        return response


def _row(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "occurred_at": event["occurred_at"].isoformat()}


def _jsonl_lines(*, organization: Organization, events: QuerySet[AuditEvent], below_id: int) -> Iterator[str]:
    for batch in audit_events_batches(organization=organization, events=events, below_id=below_id):
        yield "".join(json.dumps(_row(event), ensure_ascii=False, separators=(",", ":")) + "\n" for event in batch)


class _Line:
    """csv.writer's file: hands back the line it was given."""

    def write(self, line: str) -> str:
        return line


# A spreadsheet runs a cell starting with one of these as a formula (CSV injection): such cells are
# prefixed with an apostrophe. The JSON lines export keeps every value exactly (and verifiable).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _csv_lines(*, organization: Organization, events: QuerySet[AuditEvent], below_id: int) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(EVENT_FIELDS)
    for batch in audit_events_batches(organization=organization, events=events, below_id=below_id):
        rows = []
        for event in batch:
            row = _row(event)
            row["metadata"] = json.dumps(row["metadata"], ensure_ascii=False, sort_keys=True, separators=(",", ":"))
            rows.append(writer.writerow([_cell(row[field]) for field in EVENT_FIELDS]))
        yield "".join(rows)


# --- data export (GDPR): everything the organization has, built in the background ------------------


class DataExportOutput(serializers.Serializer[DataExport]):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=WorkStatus.choices)
    tables_total = serializers.IntegerField(help_text="Files the export writes (0 until it starts)")
    tables_done = serializers.IntegerField()
    rows_done = serializers.IntegerField()
    progress = serializers.SerializerMethodField(help_text="From 0 to 1: files written of the files to write")
    size_bytes = serializers.IntegerField(help_text="The zip's size, once built")
    sha256 = serializers.CharField(help_text="The zip's SHA-256 (hex), once built")
    manifest = serializers.JSONField(help_text="Summary of the zip's manifest.json")
    error = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True, help_text="The download link works until then")
    downloaded_at = serializers.DateTimeField(allow_null=True, help_text="Set by the one download allowed")
    download_url = serializers.SerializerMethodField(
        help_text="A signed link, usable once until expires_at (null until built, and after use or expiry)"
    )

    def get_progress(self, export: DataExport) -> float:
        if export.status == WorkStatus.SUCCEEDED:
            return 1.0
        return round(export.tables_done / export.tables_total, 4) if export.tables_total else 0.0

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_error(self, export: DataExport) -> dict[str, str] | None:
        return {"class": export.error_class, "message": export.error_message} if export.error_class else None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_download_url(self, export: DataExport) -> str | None:
        request = self.context.get("request")
        if (
            request is None
            or export.status != WorkStatus.SUCCEEDED
            or export.downloaded_at is not None
            or export.purged_at is not None
            or (export.expires_at is not None and export.expires_at <= timezone.now())
        ):
            return None
        token = data_export_link_token(organization=request_organization(request), export=export)
        return str(request.build_absolute_uri(f"/api/v1/exports/{export.pk}/download?{urlencode({'token': token})}"))


class DataExportListOutput(serializers.Serializer[Any]):
    results = DataExportOutput(many=True)


def _export_or_404(request: Request, export_id: UUID) -> DataExport:
    export = data_export_get(organization=request_organization(request), export_id=export_id)
    if export is None:
        raise ApiError(404, "not_found", "no such export in this organization")
    return export


class DataExportListCreateApi(APIView):
    required_permissions = {"GET": Permission.ADMIN, "POST": Permission.ADMIN}

    @extend_schema(operation_id="data_exports_list", responses=DataExportListOutput, summary="The newest exports")
    def get(self, request: Request) -> Response:
        exports = data_exports_list(organization=request_organization(request))
        return Response(
            {"results": [DataExportOutput(export, context={"request": request}).data for export in exports]}
        )

    @extend_schema(
        request=None,
        responses={202: DataExportOutput, 409: OpenApiResponse(description="an export is still being built")},
        summary="Export all of the organization's data (JSON lines per table in a zip), in the background",
    )
    def post(self, request: Request) -> Response:
        export = organization_export_start(organization=request_organization(request), actor=request_principal(request))
        return Response(
            DataExportOutput(export, context={"request": request}).data,
            status=202,
            headers={"Location": f"/api/v1/exports/{export.pk}"},
        )


class DataExportDetailApi(APIView):
    required_permissions = {"GET": Permission.ADMIN}

    @extend_schema(responses=DataExportOutput, summary="An export: status, progress, and its download link once built")
    def get(self, request: Request, export_id: UUID) -> Response:
        return Response(DataExportOutput(_export_or_404(request, export_id), context={"request": request}).data)


class DataExportDownloadApi(APIView):
    required_permissions = {"GET": Permission.ADMIN}

    @extend_schema(
        parameters=[OpenApiParameter("token", str, required=True)],
        responses={
            (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="The export's zip"),
            404: OpenApiResponse(description="no such export here, or a link of another organization"),
            409: OpenApiResponse(description="the export is not built yet"),
            410: OpenApiResponse(description="the link was used already, or expired"),
        },
        summary="Download an export, once, by its signed link",
    )
    def get(self, request: Request, export_id: UUID) -> StreamingHttpResponse:
        organization = request_organization(request)
        export = data_export_download_claim(
            organization=organization,
            actor=request_principal(request),
            export_id=export_id,
            token=str(request.query_params.get("token", ""))[:1000],
        )
        response = StreamingHttpResponse(
            data_export_chunks(organization=organization, export=export), content_type="application/zip"
        )
        response["Content-Length"] = str(export.size_bytes)
        response["Content-Disposition"] = f'attachment; filename="export-{organization.slug}-{export.pk}.zip"'
        response["X-Content-SHA256"] = export.sha256
        response["Cache-Control"] = "no-store"
        return response
