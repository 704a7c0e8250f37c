import uuid

from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.tasks import tenant_task
from apps.webhooks.services import webhook_delivery_attempt


def _current_organization() -> Organization:
    return Organization.objects.get(schema_name=tenant_connection().schema_name)


@tenant_task()
def webhook_deliver(*, delivery_id: str) -> str:
    """Make the due attempt of one delivery (a no-op if it is not due, finished or taken)."""
    return webhook_delivery_attempt(organization=_current_organization(), delivery_id=uuid.UUID(delivery_id))
