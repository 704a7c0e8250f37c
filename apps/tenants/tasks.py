"""The base of every tenant task: it takes `tenant_id`, enters that tenant itself, and refuses the
public schema and organizations that may not run jobs.

The schema is entered per call, on the worker thread's own connection, and restored afterwards;
nothing is kept on the task object, which every thread of a threads pool shares.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from celery import Task, shared_task
from django_tenants.utils import tenant_context

from apps.tenants.connection import tenant_connection
from apps.tenants.selectors import organization_by_id_cached
from apps.tenants.services import ready_schemas_refill
from cognitionos.logcontext import log_context


class TenantTaskRefused(Exception):
    """The task must not run: no tenant, the public schema, or an organization that may not run jobs.
    Not retried: running it later would be refused the same way."""


if TYPE_CHECKING:
    _TaskBase = Task[Any, Any]
else:
    _TaskBase = Task


class TenantTask(_TaskBase):
    abstract = True
    # False for upkeep that must go on while the organization is not served (content retention
    # sweeps): suspended and past-due organizations get it too; one being deleted does not.
    # Set per task: `@tenant_task(serves_organization=False)`.
    serves_organization = True
    # Celery's own argument check knows nothing of tenant_id; apply_async checks the call instead.
    typing = False

    def apply_async(self, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any) -> Any:
        kwargs = dict(kwargs or {})
        if kwargs.get("tenant_id") is None:
            raise TenantTaskRefused(f"{self.name} must be sent with tenant_id")
        header = self.__header__  # type: ignore[attr-defined]  # celery's signature check of the task
        header(*(args or ()), **{name: value for name, value in kwargs.items() if name != "tenant_id"})
        return super().apply_async(args, kwargs, *rest, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tenant_id = kwargs.pop("tenant_id", None)
        if tenant_id is None:
            raise TenantTaskRefused(f"{self.name} needs tenant_id")
        tenant_connection().set_schema_to_public()
        organization = organization_by_id_cached(int(tenant_id))
        if organization is None:
            raise TenantTaskRefused(f"{self.name}: no organization with id {tenant_id}")
        if organization.is_public:
            raise TenantTaskRefused(f"{self.name} refuses to run on the public schema")
        if organization.status == organization.Status.DELETING or (
            self.serves_organization and not organization.accepts_jobs
        ):
            raise TenantTaskRefused(f"{self.name}: organization {organization.slug} is {organization.status}")
        try:
            # Log lines (and the task's span, when tracing) carry the organization and task id.
            with tenant_context(organization), log_context(organization=organization.slug, task_id=self.request.id):
                return super().__call__(*args, **kwargs)
        finally:
            tenant_connection().set_schema_to_public()


F = TypeVar("F", bound=Callable[..., Any])


def tenant_task(**options: Any) -> Callable[[F], TenantTask]:
    """`@tenant_task()` makes a Celery task that must be sent with `tenant_id=`."""

    def decorate(function: F) -> TenantTask:
        make_task: Callable[[F], object] = shared_task(base=TenantTask, **options)
        return cast(TenantTask, make_task(function))

    return decorate


@shared_task
def ready_schemas_keep_filled() -> int:
    """Beat, and after each sign-up: schemas built ahead of sign-ups (apps.tenants.services)."""
    return ready_schemas_refill()
