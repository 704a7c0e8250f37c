"""The request log's reads: the ledger (UsageAttempt) of the organization whose schema the connection
is on, newest first, filtered, paged by a (created_at, id) keyset; and one call's attempts with its
stored content.

Each filter the page offers has an index that returns its rows in the page's order (apps.llm.models
UsageAttempt.Meta.indexes, `llm_attempt_log_*`), so a page reads about one page of index entries
whatever the ledger's size, and costs one query."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.llm.content import readable_json
from apps.llm.models import CallContent, UsageAttempt
from apps.llm.selectors import llm_settings_get
from apps.tenants.models import Organization

REQUEST_LOG_PAGE_SIZE = 50
# A call's attempts (retries and fallbacks) and the calls made for it (its L3 embedding...) shown on
# its detail page, at most.
REQUEST_DETAIL_MAX_ROWS = 100


@dataclass(frozen=True)
class RequestLogFilters:
    """What the page is narrowed to (validated by the portal's form: bounded, allowlisted)."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    model: str = ""
    api_key_id: int | None = None
    status: str = ""
    cache_layer: str | None = None  # "" is a miss (the provider answered), None is any
    source: str = ""
    request_prefix: str = ""


@dataclass(frozen=True)
class LogCursor:
    """A row's place in the log's order: its (created_at, id)."""

    created_at: dt.datetime
    id: int

    def encode(self) -> str:
        return f"{int(self.created_at.timestamp() * 1_000_000)}.{self.id}"

    @classmethod
    def decode(cls, text: str) -> LogCursor | None:
        """None for anything but `<microseconds>.<id>` with sane sizes (a hostile cursor is refused)."""
        micros, _, row_id = text.partition(".")
        if not (micros.isdigit() and row_id.isdigit() and len(micros) <= 17 and len(row_id) <= 18):
            return None
        try:
            created_at = dt.datetime.fromtimestamp(int(micros) / 1_000_000, tz=dt.UTC)
        except (OverflowError, ValueError, OSError):
            return None
        return cls(created_at=created_at, id=int(row_id))

    @classmethod
    def of(cls, row: UsageAttempt) -> LogCursor:
        return cls(created_at=row.created_at, id=row.pk)


@dataclass(frozen=True)
class RequestLogPage:
    rows: list[UsageAttempt]
    older: str | None  # the cursor of the next (older) page's link, None on the last page
    newer: str | None  # the previous (newer) page's, None on the first page


def _filtered(filters: RequestLogFilters) -> QuerySet[UsageAttempt]:
    rows = UsageAttempt.objects.all()
    if filters.since is not None:
        rows = rows.filter(created_at__gte=filters.since)
    if filters.until is not None:
        rows = rows.filter(created_at__lt=filters.until)
    if filters.model:
        rows = rows.filter(model_name=filters.model)
    if filters.api_key_id is not None:
        rows = rows.filter(api_key_id=filters.api_key_id)
    if filters.status:
        rows = rows.filter(status=filters.status)
    if filters.cache_layer is not None:
        rows = rows.filter(cache_layer=filters.cache_layer)
    if filters.source:
        rows = rows.filter(source=filters.source)
    if filters.request_prefix:
        # LIKE 'prefix%' on the varchar_pattern_ops index (the form allows no LIKE wildcards).
        rows = rows.filter(request_id__startswith=filters.request_prefix)
    return rows


def request_log_page(
    *,
    filters: RequestLogFilters,
    older_than: LogCursor | None = None,
    newer_than: LogCursor | None = None,
    size: int = REQUEST_LOG_PAGE_SIZE,
) -> RequestLogPage:
    """One page of the log, newest first: the first, the one after `older_than` (toward older rows)
    or the one before `newer_than` (toward newer). One query; a page deep in the log costs what the
    first one does (a keyset, never OFFSET)."""
    rows = _filtered(filters)
    if newer_than is not None:
        # Walk up from the cursor and turn the rows round: the page just before it.
        at = newer_than
        fetched = list(
            rows.filter(
                Q(created_at__gte=at.created_at) & (Q(created_at__gt=at.created_at) | Q(id__gt=at.id))
            ).order_by("created_at", "id")[: size + 1]
        )
        page = list(reversed(fetched[:size]))
        more_newer = len(fetched) > size
        return RequestLogPage(
            rows=page,
            older=LogCursor.of(page[-1]).encode() if page else None,
            newer=LogCursor.of(page[0]).encode() if page and more_newer else None,
        )
    if older_than is not None:
        at = older_than
        rows = rows.filter(Q(created_at__lte=at.created_at) & (Q(created_at__lt=at.created_at) | Q(id__lt=at.id)))
    fetched = list(rows.order_by("-created_at", "-id")[: size + 1])
    page = fetched[:size]
    return RequestLogPage(
        rows=page,
        older=LogCursor.of(page[-1]).encode() if len(fetched) > size else None,
        newer=LogCursor.of(page[0]).encode() if older_than is not None and page else None,
    )


@dataclass(frozen=True)
class CallDetail:
    """One call: its attempts in order (retries, fallbacks, or its cache hit), the calls made on its
    behalf (`<request id>.l3`, `.rag`...), and its content as the policy left it."""

    request_id: str
    attempts: list[UsageAttempt]
    related: list[UsageAttempt]
    content: CallContent | None
    content_kept: bool  # the organization's policy keeps content now
    retention_days: int

    @property
    def first(self) -> UsageAttempt:
        return self.attempts[0]

    @property
    def last(self) -> UsageAttempt:
        return self.attempts[-1]

    @property
    def reserved_usd(self) -> Decimal:
        return sum((row.reserved_usd for row in self.attempts), Decimal(0))

    @property
    def cost_usd(self) -> Decimal:
        return sum((row.cost_usd for row in self.attempts), Decimal(0))

    @property
    def saved_usd(self) -> Decimal:
        return sum((row.saved_usd for row in self.attempts), Decimal(0))

    @property
    def prompt_shown(self) -> str:
        """The kept prompt, indented for reading."""
        return readable_json(self.content.prompt) if self.content is not None else ""

    @property
    def content_expired(self) -> bool:
        """The call is older than the retention: whatever was kept of it has been deleted."""
        return self.first.created_at < timezone.now() - dt.timedelta(days=self.retention_days)


def call_detail(*, organization: Organization, request_id: str) -> CallDetail | None:
    """The call `request_id` of the organization the connection is on, or None (none such here:
    another organization's request id is not found in this schema). Two queries."""
    rows = list(
        UsageAttempt.objects.filter(Q(request_id=request_id) | Q(request_id__startswith=f"{request_id}.")).order_by(
            "created_at", "id"
        )[:REQUEST_DETAIL_MAX_ROWS]
    )
    attempts = sorted((row for row in rows if row.request_id == request_id), key=lambda row: row.attempt)
    if not attempts:
        return None
    policy = llm_settings_get(organization=organization)
    return CallDetail(
        request_id=request_id,
        attempts=attempts,
        related=[row for row in rows if row.request_id != request_id],
        content=CallContent.objects.filter(request_id=request_id).first() if policy.store_content else None,
        content_kept=policy.store_content,
        retention_days=policy.retention_days,
    )
