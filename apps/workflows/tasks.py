from uuid import UUID

from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.tasks import tenant_task
from apps.workflows.services import step_execute


def _organization() -> Organization:
    tenant: Organization = tenant_connection().tenant  # type: ignore[attr-defined]
    return tenant


@tenant_task()
def workflow_step_run(*, run_id: str, step_name: str) -> None:
    """Run one step of a workflow run; safe to deliver twice."""
    step_execute(organization=_organization(), run_id=UUID(run_id), step_name=step_name)
