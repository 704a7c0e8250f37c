"""Billing's periodic work: the ledger's usage pushed to Stripe's billing meters, per organization.

Its own fan-out (like apps.llm's usage fold) rather than the work runtime's per-tenant upkeep: only
the few organizations on a plan that bills usage get a task, not every organization every minute.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from apps.billing.metering import metering_organization_ids, meters_push
from apps.billing.operator_services import plan_grants_expire
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.tasks import tenant_task


@tenant_task(serves_organization=False)
def billing_meters_push() -> dict[str, Any]:
    """Send this organization's unsent ledger rows to its Stripe meter (suspended and past-due
    organizations too: their usage was incurred and bills)."""
    organization: Organization = tenant_connection().tenant  # type: ignore[attr-defined]
    report = meters_push(organization=organization)
    return {
        "sent": report.sent,
        "marked": report.marked,
        "failed": report.failed,
        "unavailable": report.unavailable,
        "skipped": report.skipped,
    }


@shared_task
def billing_meters_push_all() -> int:
    """Beat: one meter push per organization on (or lately on) a plan that bills usage."""
    ids = metering_organization_ids()
    for organization_id in ids:
        billing_meters_push.delay(tenant_id=organization_id)
    return len(ids)


@shared_task
def billing_plan_grants_expire() -> int:
    """Beat: end the operators' plan grants whose end date passed (idempotent: an ended grant is
    skipped, and two runs at once serialize on the grant's row lock)."""
    return plan_grants_expire()
