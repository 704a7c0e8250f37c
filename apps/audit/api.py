"""REST API v1: the organization's audit log, as pages (newest first) and as a streamed export."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request

from apps.api.authentication import request_organization, request_principal
from apps.api.errors import ApiError
from apps.api.pagination import CreatedCursorPagination
from apps.audit.filters import AuditEventFilter
from apps.audit.models import AuditEvent
from apps.audit.selectors import EVENT_FIELDS, audit_events_batches
from apps.audit.services import audit_export_start
from apps.rbac.permissions import Permission
from apps.tenants.models import Organization
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
