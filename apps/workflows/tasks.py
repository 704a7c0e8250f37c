from uuid import UUID

from celery import shared_task

from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_list
from apps.tenants.tasks import tenant_task
from apps.workflows.services import runs_content_sweep, runs_reap, step_execute


def _organization() -> Organization:
    tenant: Organization = tenant_connection().tenant  # type: ignore[attr-defined]
    return tenant


@tenant_task()
def workflow_step_run(*, run_id: str, step_name: str) -> None:
    """Run one step of a workflow run; safe to deliver twice."""
    step_execute(organization=_organization(), run_id=UUID(run_id), step_name=step_name)


@tenant_task()
def workflow_runs_reap() -> dict[str, int]:
    return runs_reap(organization=_organization())


@shared_task
def workflow_runs_reap_all() -> int:
    """Beat: send again each organization's workflow steps whose worker died or whose message was lost."""
    ids = [organization.pk for organization in organization_list() if organization.accepts_jobs]
    for organization_id in ids:
        workflow_runs_reap.delay(tenant_id=organization_id)
    return len(ids)


@tenant_task(serves_organization=False)
def workflow_content_sweep() -> int:
    return runs_content_sweep(organization=_organization())


@shared_task
def workflow_content_sweep_all() -> int:
    """Beat: delete the content of runs past each organization's retention, for suspended and
    past-due organizations too (keeping content is not serving the organization)."""
    ids = [
        organization.pk for organization in organization_list() if organization.status != Organization.Status.DELETING
    ]
    for organization_id in ids:
        workflow_content_sweep.delay(tenant_id=organization_id)
    return len(ids)
