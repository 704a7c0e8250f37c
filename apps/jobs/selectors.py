from uuid import UUID

from django.shortcuts import get_object_or_404

from apps.jobs.models import Job


def job_get(*, job_id: UUID) -> Job:
    """A job of the current organization (its schema), or 404."""
    return get_object_or_404(Job.objects.select_related("agent"), pk=job_id)
