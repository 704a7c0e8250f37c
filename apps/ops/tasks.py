"""Operations' Celery tasks (beat-driven). Sections per feature; append yours below."""

from __future__ import annotations

import logging

from celery import shared_task

from apps.ops.deletion import DeletionRefused, organization_purge, organizations_deletion_due

logger = logging.getLogger(__name__)


# -- organization deletion (apps.ops.deletion) -------------------------------------------------------


@shared_task
def organizations_purge_due() -> int:
    """Beat: one purge task per organization whose deletion is due (a purge that an earlier run
    left half done is due too, and finishes)."""
    ids = organizations_deletion_due()
    for organization_id in ids:
        organization_purge_run.delay(organization_id=organization_id)
    return len(ids)


@shared_task
def organization_purge_run(*, organization_id: int) -> bool:
    """Purge one organization; idempotent (a second delivery finds nothing, or waits its turn)."""
    try:
        return organization_purge(organization_id=organization_id)
    except DeletionRefused as refused:  # cancelled or postponed since the beat listed it
        logger.info("organization %s not purged: %s", organization_id, refused)
        return False
