from uuid import UUID

from celery import shared_task

from apps.jobs.services import job_execute, jobs_content_expire, jobs_reap
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_list
from apps.tenants.tasks import tenant_task


def _organization() -> Organization:
    tenant: Organization = tenant_connection().tenant  # type: ignore[attr-defined]
    return tenant


@tenant_task()
def job_run(*, job_id: str) -> None:
    job_execute(organization=_organization(), job_id=UUID(job_id))


@tenant_task()
def jobs_reap_tenant() -> dict[str, int]:
    return jobs_reap(organization=_organization())


@shared_task
def jobs_reap_all() -> int:
    """Beat: recover each organization's jobs whose worker died."""
    ids = [organization.pk for organization in organization_list() if organization.accepts_jobs]
    for organization_id in ids:
        jobs_reap_tenant.delay(tenant_id=organization_id)
    return len(ids)


@tenant_task(serves_organization=False)
def jobs_content_expire_tenant() -> int:
    return jobs_content_expire(organization=_organization())


@shared_task
def jobs_content_expire_all() -> int:
    """Beat: remove prompts and answers of jobs past their organization's retention, for suspended
    and past-due organizations too (keeping content is not serving the organization)."""
    ids = [
        organization.pk for organization in organization_list() if organization.status != Organization.Status.DELETING
    ]
    for organization_id in ids:
        jobs_content_expire_tenant.delay(tenant_id=organization_id)
    return len(ids)
