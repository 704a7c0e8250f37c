import uuid

from celery import shared_task

from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_list
from apps.tenants.tasks import tenant_task
from apps.webhooks.services import (
    webhook_deliveries_content_sweep,
    webhook_deliveries_dispatch,
    webhook_delivery_attempt,
)


def _current_organization() -> Organization:
    return Organization.objects.get(schema_name=tenant_connection().schema_name)


@tenant_task()
def webhook_deliver(*, delivery_id: str) -> str:
    """Make the due attempt of one delivery (a no-op if it is not due, finished or taken)."""
    return webhook_delivery_attempt(organization=_current_organization(), delivery_id=uuid.UUID(delivery_id))


@tenant_task()
def webhook_deliveries_dispatch_tenant() -> int:
    """Send a task for each of this organization's due attempts (retries, lost tasks)."""
    return webhook_deliveries_dispatch(organization=_current_organization())


@shared_task
def webhook_deliveries_dispatch_all() -> int:
    """Beat: one dispatch task per organization that may run jobs."""
    ids = [organization.pk for organization in organization_list() if organization.accepts_jobs]
    for organization_id in ids:
        webhook_deliveries_dispatch_tenant.delay(tenant_id=organization_id)
    return len(ids)


@tenant_task(serves_organization=False)
def webhook_deliveries_content_sweep_tenant() -> int:
    """Remove the content of this organization's deliveries past its retention (all in no-content mode)."""
    return webhook_deliveries_content_sweep(organization=_current_organization())


@shared_task
def webhook_deliveries_content_sweep_all() -> int:
    """Beat: one delivery content sweep per organization, suspended and past-due ones included
    (keeping content is not serving the organization)."""
    ids = [
        organization.pk for organization in organization_list() if organization.status != Organization.Status.DELETING
    ]
    for organization_id in ids:
        webhook_deliveries_content_sweep_tenant.delay(tenant_id=organization_id)
    return len(ids)
