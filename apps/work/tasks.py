"""The runtime's tasks: one that runs a row of any kind, and the one per-tenant beat fan-out for
the upkeep of all background work (reaping and dispatching for organizations that are served,
content retention for suspended and past-due ones too), the registered kinds' and the upkeep
functions of apps whose work is not a kind yet (workflow steps)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import shared_task

from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_list
from apps.tenants.tasks import tenant_task
from apps.work.registry import work_kind, work_kinds, work_upkeeps
from apps.work.services import work_content_sweep, work_dispatch, work_execute, work_reap


def _organization() -> Organization:
    tenant: Organization = tenant_connection().tenant  # type: ignore[attr-defined]
    return tenant


@tenant_task()
def work_run(*, kind: str, item_id: str) -> None:
    """Run one row of a kind of work; safe to deliver twice."""
    registered = work_kind(kind)
    work_execute(organization=_organization(), kind=registered, item_id=registered.model._meta.pk.to_python(item_id))


# duty -> (what it does to one kind in one organization, whether only served organizations get it)
DUTIES: dict[str, tuple[Callable[..., Any] | None, bool]] = {
    # Rows whose worker died go back to the queue; admitted rows no worker took are sent again.
    "reap": (work_reap, True),
    # Content past the organization's retention is removed: keeping it is not serving the organization.
    "sweep": (work_content_sweep, False),
    # Retries of kinds with their own schedule wait in the database and are sent when due.
    "dispatch": (work_dispatch, True),
}


@tenant_task(serves_organization=False)
def work_maintain(*, duty: str) -> dict[str, Any]:
    """One duty for every kind of work, and every upkeep registered for it, in this organization."""
    run, served_only = DUTIES[duty]
    organization = _organization()
    if served_only and not organization.accepts_jobs:
        return {}
    done: dict[str, Any] = {}
    if run is not None:
        done.update({kind.name: run(organization=organization, kind=kind) for kind in work_kinds()})
    for name, upkeep in work_upkeeps(duty).items():
        done[name] = upkeep(organization=organization)
    return done


@shared_task
def work_maintain_all(*, duty: str) -> int:
    """Beat: one `work_maintain` per organization that gets the duty (never one being deleted)."""
    _, served_only = DUTIES[duty]
    ids = [
        organization.pk
        for organization in organization_list()
        if (organization.accepts_jobs if served_only else organization.status != Organization.Status.DELETING)
    ]
    for organization_id in ids:
        work_maintain.delay(tenant_id=organization_id, duty=duty)
    return len(ids)
