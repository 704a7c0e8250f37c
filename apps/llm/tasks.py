from celery import shared_task

from apps.llm.budgets import holds_sweep, usage_fold
from apps.llm.plan_budget import plan_budget_sync
from apps.llm.services import llm_content_sweep, usage_hours_prune
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_list
from apps.tenants.tasks import tenant_task


@tenant_task()
def llm_holds_sweep() -> int:
    """Settle this organization's attempts whose process died, from their reservations."""
    organization = Organization.objects.get(schema_name=tenant_connection().schema_name)
    return holds_sweep(organization=organization)


@shared_task
def llm_holds_sweep_all() -> int:
    """Beat: one sweep task per organization that may run jobs."""
    ids = [org.pk for org in organization_list() if org.accepts_jobs]
    for organization_id in ids:
        llm_holds_sweep.delay(tenant_id=organization_id)
    return len(ids)


@tenant_task(serves_organization=False)
def llm_content_sweep_one() -> int:
    """Delete this organization's stored answers past their retention (or all, in no-content mode)."""
    organization = Organization.objects.get(schema_name=tenant_connection().schema_name)
    return llm_content_sweep(organization=organization)


@shared_task
def llm_content_sweep_all() -> int:
    """Beat: one retention sweep per organization, suspended and past-due ones included (keeping
    content is not serving the organization)."""
    ids = [org.pk for org in organization_list() if org.status != Organization.Status.DELETING]
    for organization_id in ids:
        llm_content_sweep_one.delay(tenant_id=organization_id)
    return len(ids)


@tenant_task(serves_organization=False)
def llm_usage_fold() -> int:
    """Add this organization's settled ledger rows to the public usage rollup."""
    organization = Organization.objects.get(schema_name=tenant_connection().schema_name)
    return usage_fold(organization=organization)


@shared_task
def llm_usage_fold_all() -> int:
    """Beat: one rollup fold per organization, suspended ones included (their last calls and swept
    holds still count)."""
    ids = [org.pk for org in organization_list() if org.status != Organization.Status.DELETING]
    for organization_id in ids:
        llm_usage_fold.delay(tenant_id=organization_id)
    return len(ids)


@shared_task
def llm_usage_hours_prune() -> int:
    """Beat: delete every organization's hour buckets past their keeping (one public table)."""
    return usage_hours_prune()


@tenant_task(serves_organization=False)
def llm_plan_budget_sync() -> str:
    """Set this organization's plan budget (Free's included usage) to what its plan says now."""
    organization = Organization.objects.get(schema_name=tenant_connection().schema_name)
    limit = plan_budget_sync(organization=organization)
    return "none" if limit is None else str(limit)


@shared_task
def llm_plan_budgets_sync_all() -> int:
    """Beat: the plan budget follows changes that happen by the clock alone (a past-due grace or a
    cancelled subscription's period ending moves an organization to Free without any write), and
    organizations that existed before plan budgets get theirs."""
    ids = [org.pk for org in organization_list() if org.status != Organization.Status.DELETING]
    for organization_id in ids:
        llm_plan_budget_sync.delay(tenant_id=organization_id)
    return len(ids)
