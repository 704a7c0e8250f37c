from celery import shared_task

from apps.api.services import idempotency_purge
from apps.tenants.selectors import organization_list
from apps.tenants.tasks import tenant_task


# Stored answers may hold content (a delivery's payload): purged for suspended organizations too.
@tenant_task(serves_organization=False)
def idempotency_keys_purge() -> int:
    return idempotency_purge()


@shared_task
def idempotency_keys_purge_all() -> int:
    """Beat: forget Idempotency-Keys older than a day, one task per organization."""
    ids = [organization.pk for organization in organization_list() if not organization.is_public]
    for organization_id in ids:
        idempotency_keys_purge.delay(tenant_id=organization_id)
    return len(ids)
