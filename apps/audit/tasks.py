"""The chainer's tasks: one run per organization after commits (audit_chain_schedule), and the
beat sweep that runs it for every organization, in case a scheduled run was lost."""

from celery import shared_task

from apps.audit.services import audit_chain_run
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_list
from apps.tenants.tasks import tenant_task


# Not serving the organization: a suspended or past-due organization's events (its suspension's own,
# say) are chained too.
@tenant_task(serves_organization=False)
def audit_chain_tenant() -> int:
    organization: Organization = tenant_connection().tenant  # type: ignore[attr-defined]
    return audit_chain_run(organization=organization)


@shared_task
def audit_chain_sweep_all() -> int:
    """Beat: chain every organization's unchained events (a run the commit scheduled may have been
    lost with a worker or the broker); organizations with none cost one indexed read."""
    ids = [
        organization.pk for organization in organization_list() if organization.status != Organization.Status.DELETING
    ]
    for organization_id in ids:
        audit_chain_tenant.delay(tenant_id=organization_id)
    return len(ids)
