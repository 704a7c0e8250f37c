from uuid import UUID

from django.shortcuts import get_object_or_404

from apps.agents.models import Agent


def agent_get(*, agent_id: UUID) -> Agent:
    """An agent of the current organization (its schema), or 404."""
    return get_object_or_404(Agent, pk=agent_id)


def agent_find(*, reference: str) -> Agent | None:
    """An agent of the current organization by id or by name (how jobs and workflow steps name one)."""
    try:
        return Agent.objects.filter(pk=UUID(reference)).first()
    except ValueError:
        return Agent.objects.filter(name=reference).first()
