"""Reads for the operators' admin: organizations with their usage from the public rollups, one
organization's open work (in its schema), its jobs and runs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Count, DecimalField, IntegerField, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.llm.platform.models import UsageBucket, UsageSpan
from apps.ops.models import SupportAccessGrant
from apps.rbac.models import Membership
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization

# Jobs and runs listed at most per page of the operators' work view.
WORK_PAGE_SIZE = 100
WORK_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def period_start(now: dt.datetime | None = None) -> dt.datetime:
    """The current usage period: the calendar month (UTC), as plans and invoices count it."""
    now = now or timezone.now()
    return now.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def organizations_with_usage(queryset: QuerySet[Organization], *, since: dt.datetime) -> QuerySet[Organization]:
    """Each organization with its member count and this period's requests and spend, read from the
    public rollups (day totals) as subqueries: one query for a whole page, no tenant schema read."""
    days = UsageBucket.objects.filter(organization=OuterRef("pk"), span=UsageSpan.DAY_TOTAL, start__gte=since)
    spend = days.values("organization").annotate(total=Sum("cost_usd")).values("total")
    requests = days.values("organization").annotate(total=Sum("requests")).values("total")
    members = (
        Membership.objects.filter(organization=OuterRef("pk"))
        .values("organization")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return queryset.select_related("plan").annotate(
        period_spend_usd=Coalesce(
            Subquery(spend, output_field=DecimalField(max_digits=18, decimal_places=8)),
            Value(Decimal(0)),
            output_field=DecimalField(max_digits=18, decimal_places=8),
        ),
        period_requests=Coalesce(Subquery(requests, output_field=IntegerField()), Value(0)),
        member_count=Coalesce(Subquery(members, output_field=IntegerField()), Value(0)),
    )


@dataclass(frozen=True)
class OpenWork:
    jobs_queued: int
    jobs_running: int
    runs_queued: int
    runs_running: int

    @property
    def total(self) -> int:
        return self.jobs_queued + self.jobs_running + self.runs_queued + self.runs_running


def organization_open_work(*, organization: Organization) -> OpenWork:
    """Queued and running jobs and workflow runs, counted in the organization's schema (two queries):
    for one organization's page, never for a list."""
    from apps.jobs.models import Job
    from apps.workflows.models import WorkflowRun

    with organization_schema(organization):
        jobs = dict(Job.objects.filter(status__in=("queued", "running")).values_list("status").annotate(n=Count("pk")))
        runs = dict(
            WorkflowRun.objects.filter(status__in=("queued", "running")).values_list("status").annotate(n=Count("pk"))
        )
    return OpenWork(
        jobs_queued=jobs.get("queued", 0),
        jobs_running=jobs.get("running", 0),
        runs_queued=runs.get("queued", 0),
        runs_running=runs.get("running", 0),
    )


@dataclass(frozen=True)
class WorkRow:
    kind: str  # "job" or "run"
    id: str
    status: str
    created_at: dt.datetime
    finished_at: dt.datetime | None
    label: str  # the model, or the workflow's name
    submitted_by: str
    error: str


def organization_work(
    *, organization: Organization, kind: str, status: str = "", older_than: dt.timedelta | None = None
) -> list[WorkRow]:
    """One organization's jobs or workflow runs, newest first, at most WORK_PAGE_SIZE: read in its
    schema only (an operator chooses the organization first)."""
    from apps.jobs.models import Job
    from apps.workflows.models import WorkflowRun

    filters: dict[str, Any] = {}
    if status:
        filters["status"] = status
    if older_than is not None:
        filters["created_at__lte"] = timezone.now() - older_than
    with organization_schema(organization):
        if kind == "job":
            jobs = Job.objects.filter(**filters).order_by("-created_at")[:WORK_PAGE_SIZE]
            return [
                WorkRow(
                    kind="job",
                    id=str(job.pk),
                    status=job.status,
                    created_at=job.created_at,
                    finished_at=job.finished_at,
                    label=str(job.request.get("model") or job.request.get("policy") or ""),
                    submitted_by=job.principal_label,
                    error=job.error_class,
                )
                for job in jobs
            ]
        runs = WorkflowRun.objects.filter(**filters).select_related("workflow").order_by("-created_at")
        return [
            WorkRow(
                kind="run",
                id=str(run.pk),
                status=run.status,
                created_at=run.created_at,
                finished_at=run.finished_at,
                label=run.workflow.name,
                submitted_by=run.principal_label,
                error=run.error_class,
            )
            for run in runs[:WORK_PAGE_SIZE]
        ]


def support_grants_active(*, organization: Organization) -> QuerySet[SupportAccessGrant]:
    now = timezone.now()
    return (
        SupportAccessGrant.objects.filter(
            organization=organization, revoked_at__isnull=True, created_at__lte=now, expires_at__gt=now
        )
        .select_related("operator")
        .order_by("-expires_at")
    )
