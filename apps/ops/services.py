from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.accounts.services import operator_ensure
from apps.apikeys.selectors import apikey_cache_forget
from apps.audit.services import audit_record
from apps.ops.models import SUPPORT_ACCESS_MAX, OperatorAction, SupportAccessGrant
from apps.tenants.models import Organization
from apps.tenants.services import organization_create

DEMO_SLUG = "demo"
DOCS_DIR = Path(__file__).resolve().parents[2] / "docs"
DEMO_GUIDES = ("knowledge.md", "portal.md", "jobs.md", "workflows.md")
OPERATOR_EMAIL = "operator@cognitionos.localhost"


@dataclass(frozen=True)
class DemoStack:
    organization: Organization
    operator_email: str
    operator_password: str | None  # only when the operator was created just now


def demo_ensure() -> DemoStack:
    """The operator account and the demo organization `make run` starts with, created once."""
    operator, password = operator_ensure(email=OPERATOR_EMAIL)
    organization = Organization.objects.filter(slug=DEMO_SLUG).first()
    if organization is None:
        organization = organization_create(
            slug=DEMO_SLUG,
            name="Demo organization",
            owner_email=operator.email,
            plan_code="pro",
            actor=Principal.system("make run"),
        )
        demo_knowledge_base_ensure(organization=organization)
    return DemoStack(organization=organization, operator_email=operator.email, operator_password=password)


def demo_knowledge_base_ensure(*, organization: Organization) -> None:
    """A knowledge base of CognitionOS's own guides, so a new demo has something to search (and
    the worker ingests it as soon as it starts, embedded by whatever model the catalog offers:
    the simulated one when no provider is configured, which the portal labels as simulated)."""
    from apps.knowledge.services import document_upload, knowledge_base_create

    guides = [path for path in (DOCS_DIR / name for name in DEMO_GUIDES) if path.is_file()]
    if not guides:
        return  # not run from a checkout: no guides to load
    actor = Principal.system("make run")
    with schema_context(organization.schema_name):
        base = knowledge_base_create(
            organization=organization,
            principal=actor,
            name="CognitionOS guides",
            description="The project's own documentation, loaded by make run as an example.",
        )
        for path in guides:
            document_upload(
                organization=organization,
                principal=actor,
                knowledge_base=base,
                filename=path.name,
                content_type="text/markdown",
                content=path.read_bytes(),
            )


def portal_url(organization: Organization, port: int) -> str:
    return f"http://{organization.slug}.{settings.BASE_DOMAIN}:{port}/"


# --- Operator actions (the Django admin on the platform host) --------------------------------------
# Each action is one atomic function: it checks the operator, does the change through the owning
# app's service, records the event in the organization's audit log (the owning service does, or
# this one) and in the platform's operator log (OperatorAction).

OPERATOR_REASON_MAX = 1000


class OperatorActionRefused(Exception):
    """The action was not done; `code` names the rule, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def operator_principal(user: User) -> Principal:
    """The actor for a staff user's action (kind "operator"); anyone else is refused."""
    if not (user.is_active and user.is_staff):
        raise OperatorActionRefused("permission_denied", "only operators (active staff users) do this")
    return Principal(kind="operator", id=str(user.pk), label=user.email)


def operator_reason_clean(reason: str, *, required: bool = True) -> str:
    reason = " ".join((reason or "").split())
    if required and not reason:
        raise OperatorActionRefused("reason_required", "say why (it is kept in the operator and audit logs)")
    if len(reason) > OPERATOR_REASON_MAX:
        raise OperatorActionRefused("reason_too_long", f"the reason is at most {OPERATOR_REASON_MAX} characters")
    return reason


def operator_action_record(
    *,
    actor: Principal,
    action: str,
    organization: Organization | None = None,
    target: str = "",
    reason: str = "",
    metadata: dict[str, Any] | None = None,
) -> OperatorAction:
    """Append one row to the platform's operator log (public schema), in the caller's transaction."""
    if not action:
        raise ValueError("an operator action needs a name")
    with schema_context("public"):
        return OperatorAction.objects.create(
            actor_kind=actor.kind,
            actor_id=actor.id or "",
            actor_label=actor.label[:254],
            action=action[:100],
            organization=organization,
            organization_slug=organization.slug if organization is not None else "",
            target=target[:200],
            reason=reason[:OPERATOR_REASON_MAX],
            metadata=metadata or {},
        )


@transaction.atomic
def operator_organization_suspend(*, organization: Organization, actor: Principal, reason: str) -> Organization:
    """Suspend: the organization's API calls, jobs and portal are refused (apps.tenants middleware)."""
    from apps.tenants.services import organization_status_set

    reason = operator_reason_clean(reason)
    if organization.status == Organization.Status.DELETING:
        raise OperatorActionRefused("deleting", "the organization is being deleted: cancel the deletion first")
    previous = organization.status
    organization_status_set(organization=organization, status=Organization.Status.SUSPENDED, actor=actor, reason=reason)
    # API keys carry their organization in this process's key cache (TENANT_RESOLUTION_CACHE_SECONDS).
    transaction.on_commit(apikey_cache_forget)
    operator_action_record(
        actor=actor,
        action="organization.suspended",
        organization=organization,
        target=organization.slug,
        reason=reason,
        metadata={"from": previous},
    )
    return organization


@transaction.atomic
def operator_organization_resume(*, organization: Organization, actor: Principal, reason: str) -> Organization:
    """Lift a suspension (back to active)."""
    from apps.tenants.services import organization_status_set

    reason = operator_reason_clean(reason)
    if organization.status != Organization.Status.SUSPENDED:
        raise OperatorActionRefused("not_suspended", f"the organization is {organization.status}, not suspended")
    organization_status_set(organization=organization, status=Organization.Status.ACTIVE, actor=actor, reason=reason)
    transaction.on_commit(apikey_cache_forget)
    operator_action_record(
        actor=actor,
        action="organization.resumed",
        organization=organization,
        target=organization.slug,
        reason=reason,
    )
    return organization


@transaction.atomic
def operator_plan_change(*, organization: Organization, plan_code: str, actor: Principal, reason: str) -> Organization:
    """Move the organization to a plan (its newest version) as an operator override."""
    from apps.billing.models import OrganizationPlanPeriod, Plan
    from apps.billing.services import organization_plan_change

    reason = operator_reason_clean(reason)
    plan = Plan.objects.filter(code=plan_code).first()
    if plan is None:
        raise OperatorActionRefused("unknown_plan", f"no plan {plan_code!r}")
    previous = organization.plan.code
    organization_plan_change(
        organization=organization, plan=plan, reason=OrganizationPlanPeriod.Reason.OPERATOR, actor=actor
    )
    # The billing event names the plans; this one keeps the operator's reason beside it.
    audit_record(
        organization=organization,
        actor=actor,
        action="operator.plan_changed",
        target=organization,
        metadata={"from": previous, "to": plan.code, "reason": reason},
    )
    operator_action_record(
        actor=actor,
        action="organization.plan_changed",
        organization=organization,
        target=organization.slug,
        reason=reason,
        metadata={"from": previous, "to": plan.code},
    )
    return organization


def _deletion_services() -> Any:
    """The data-deletion services (apps.ops.deletion, issue 16's export/deletion part)."""
    try:
        from apps.ops import deletion
    except ImportError as exc:  # pragma: no cover - only while that module is not in the build
        raise OperatorActionRefused("unavailable", "organization deletion is not available in this build") from exc
    return deletion


@transaction.atomic
def operator_deletion_schedule(
    *, organization: Organization, actor: Principal, reason: str, grace_days: int = 30
) -> Organization:
    """Schedule the organization's deletion after a grace period (cancellable until then)."""
    reason = operator_reason_clean(reason)
    if not 1 <= grace_days <= 90:
        raise OperatorActionRefused("grace_days", "the grace period is 1 to 90 days")
    deletion = _deletion_services()
    try:
        scheduled: Organization = deletion.organization_deletion_schedule(
            organization=organization, actor=actor, reason=reason, grace_days=grace_days
        )
    except deletion.DeletionRefused as refused:
        raise OperatorActionRefused(refused.code, str(refused)) from refused
    operator_action_record(
        actor=actor,
        action="organization.deletion_scheduled",
        organization=organization,
        target=organization.slug,
        reason=reason,
        metadata={
            "grace_days": grace_days,
            "due_at": scheduled.deletion_due_at.isoformat() if scheduled.deletion_due_at else "",
        },
    )
    return scheduled


@transaction.atomic
def operator_deletion_cancel(*, organization: Organization, actor: Principal, reason: str) -> Organization:
    reason = operator_reason_clean(reason)
    deletion = _deletion_services()
    try:
        cancelled: Organization = deletion.organization_deletion_cancel(organization=organization, actor=actor)
    except deletion.DeletionRefused as refused:
        raise OperatorActionRefused(refused.code, str(refused)) from refused
    operator_action_record(
        actor=actor,
        action="organization.deletion_cancelled",
        organization=organization,
        target=organization.slug,
        reason=reason,
    )
    return cancelled


# Deployments (apps.llm's actions through its surface; shared by every organization).


@transaction.atomic
def operator_breaker_reset(*, provider: str, model: str, actor: Principal, reason: str = "") -> None:
    from apps.llm.calls import deployment_breaker_reset

    reason = operator_reason_clean(reason, required=False)
    deployment_breaker_reset(provider=provider, model=model, actor=actor, reason=reason)
    operator_action_record(actor=actor, action="deployment.breaker_reset", target=f"{provider}/{model}", reason=reason)


@transaction.atomic
def operator_breaker_open(*, provider: str, model: str, actor: Principal, reason: str) -> None:
    from apps.llm.calls import deployment_breaker_open

    reason = operator_reason_clean(reason)
    deployment_breaker_open(provider=provider, model=model, actor=actor, reason=reason)
    operator_action_record(actor=actor, action="deployment.breaker_opened", target=f"{provider}/{model}", reason=reason)


@transaction.atomic
def operator_deployment_enabled_set(*, provider: str, model: str, enabled: bool, actor: Principal, reason: str) -> None:
    from apps.llm.calls import deployment_enabled_set

    reason = operator_reason_clean(reason)
    deployment_enabled_set(provider=provider, model=model, enabled=enabled, actor=actor, reason=reason)
    operator_action_record(
        actor=actor,
        action="deployment.enabled" if enabled else "deployment.disabled",
        target=f"{provider}/{model}",
        reason=reason,
    )


# Support access: an operator's time-limited, read-only entry to one organization's portal.

SUPPORT_ACCESS_ROLE = "viewer"  # the narrowest built-in role (apps.rbac.permissions)


@transaction.atomic
def support_access_grant(
    *, operator: User, organization: Organization, reason: str, duration: dt.timedelta
) -> SupportAccessGrant:
    """Give the operator read-only access (the Viewer role) to the organization's portal, on its
    host only, for `duration` (at most SUPPORT_ACCESS_MAX). The organization's audit log shows it."""
    actor = operator_principal(operator)
    reason = operator_reason_clean(reason)
    if organization.is_public:
        raise OperatorActionRefused("not_an_organization", "support access is to an organization")
    if not dt.timedelta(minutes=1) <= duration <= SUPPORT_ACCESS_MAX:
        raise OperatorActionRefused("duration", f"support access lasts 1 minute to {SUPPORT_ACCESS_MAX}")
    now = timezone.now()
    grant = SupportAccessGrant.objects.create(
        operator=operator, organization=organization, reason=reason, created_at=now, expires_at=now + duration
    )
    audit_record(
        organization=organization,
        actor=actor,
        action="support_access.granted",
        metadata={
            "operator": operator.email,
            "reason": reason,
            "role": SUPPORT_ACCESS_ROLE,
            "expires_at": grant.expires_at.isoformat(),
        },
    )
    operator_action_record(
        actor=actor,
        action="support_access.granted",
        organization=organization,
        target=f"grant {grant.pk}",
        reason=reason,
        metadata={"expires_at": grant.expires_at.isoformat()},
    )
    return grant


@transaction.atomic
def support_access_revoke(*, grant: SupportAccessGrant, actor: Principal) -> SupportAccessGrant:
    """End a grant now (no-op if it already ended)."""
    now = timezone.now()
    if grant.revoked_at is not None or grant.expires_at <= now:
        return grant
    SupportAccessGrant.objects.filter(pk=grant.pk, revoked_at__isnull=True).update(revoked_at=now)
    grant.revoked_at = now
    organization = grant.organization
    audit_record(
        organization=organization,
        actor=actor,
        action="support_access.revoked",
        metadata={"operator": grant.operator.email, "grant": grant.pk},
    )
    operator_action_record(
        actor=actor, action="support_access.revoked", organization=organization, target=f"grant {grant.pk}"
    )
    return grant


def support_access_permissions(request: HttpRequest, organization: Organization) -> frozenset[str] | None:
    """A staff user's permissions on this organization's host through an active support grant
    (None: none). Expiry is checked here, on each request; the first use is audited."""
    from allauth.account.authentication import get_authentication_records

    from apps.accounts.selectors import user_has_mfa
    from apps.rbac.permissions import permissions_expand, role_permissions

    user = request.user
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return None
    now = timezone.now()
    grant = (
        SupportAccessGrant.objects.filter(
            operator_id=user.pk,
            organization_id=organization.pk,
            revoked_at__isnull=True,
            created_at__lte=now,
            expires_at__gt=now,
        )
        .order_by("-expires_at")
        .first()
    )
    if grant is None:
        return None
    # Operators work with a second factor: a session that signed in without one gets nothing.
    if not (
        user_has_mfa(user_id=user.pk)
        and any(record.get("method") == "mfa" for record in get_authentication_records(request, user))
    ):
        return None
    if grant.first_used_at is None:
        with transaction.atomic():
            if SupportAccessGrant.objects.filter(pk=grant.pk, first_used_at__isnull=True).update(first_used_at=now):
                actor = operator_principal(user)
                audit_record(
                    organization=organization,
                    actor=actor,
                    action="support_access.used",
                    metadata={"operator": user.email, "grant": grant.pk, "path": request.path[:200]},
                )
                operator_action_record(
                    actor=actor, action="support_access.used", organization=organization, target=f"grant {grant.pk}"
                )
    return frozenset(permission.value for permission in permissions_expand(role_permissions(SUPPORT_ACCESS_ROLE)))


# Jobs and workflow runs of one organization (in its schema).

REQUEUEABLE = ("failed", "cancelled")


@transaction.atomic
def operator_job_requeue(*, organization: Organization, job_id: str, actor: Principal, reason: str) -> None:
    """Queue a failed or cancelled job again as if new (the runtime admits and sends it)."""
    from apps.jobs.models import Job
    from apps.jobs.services import JOB
    from apps.work.services import work_admit, work_requeue

    reason = operator_reason_clean(reason)
    if not organization.accepts_jobs:
        raise OperatorActionRefused("not_accepting_jobs", f"the organization is {organization.status}")
    with schema_context(organization.schema_name):
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            raise OperatorActionRefused("not_found", "no such job in this organization")
        if job.status not in REQUEUEABLE:
            raise OperatorActionRefused("not_requeueable", f"the job is {job.status}: only failed or cancelled jobs")
        previous = job.status
        work_requeue(kind=JOB, item=job)
        audit_record(
            organization=organization,
            actor=actor,
            action="job.requeued",
            target=job,
            metadata={"from": previous, "reason": reason},
        )
        work_admit(organization=organization, kind=JOB, waiting=True)
    operator_action_record(
        actor=actor, action="job.requeued", organization=organization, target=f"job {job_id}", reason=reason
    )


@transaction.atomic
def operator_job_cancel(*, organization: Organization, job_id: str, actor: Principal, reason: str) -> None:
    from apps.jobs.models import Job
    from apps.jobs.services import JobFinished, job_cancel

    reason = operator_reason_clean(reason)
    with schema_context(organization.schema_name):
        job = Job.objects.filter(pk=job_id).first()
        if job is None:
            raise OperatorActionRefused("not_found", "no such job in this organization")
        try:
            job_cancel(organization=organization, actor=actor, job=job)
        except JobFinished as exc:
            raise OperatorActionRefused("finished", f"the job already ended ({exc})") from exc
    operator_action_record(
        actor=actor, action="job.cancelled", organization=organization, target=f"job {job_id}", reason=reason
    )


@transaction.atomic
def operator_run_cancel(*, organization: Organization, run_id: str, actor: Principal, reason: str) -> None:
    from apps.workflows.models import WorkflowRun
    from apps.workflows.runs import RunFinished, run_cancel

    reason = operator_reason_clean(reason)
    with schema_context(organization.schema_name):
        run = WorkflowRun.objects.filter(pk=run_id).first()
        if run is None:
            raise OperatorActionRefused("not_found", "no such run in this organization")
        try:
            run_cancel(organization=organization, actor=actor, run=run)
        except RunFinished as exc:
            raise OperatorActionRefused("finished", f"the run already ended ({exc})") from exc
    operator_action_record(
        actor=actor, action="workflow_run.cancelled", organization=organization, target=f"run {run_id}", reason=reason
    )


@transaction.atomic
def operator_run_rerun(*, organization: Organization, run_id: str, actor: Principal, reason: str) -> str:
    """Run a failed workflow run again from its failed steps (a new run); returns the new run's id."""
    from apps.workflows.models import WorkflowRun
    from apps.workflows.runs import RunNotRerunnable, run_rerun

    reason = operator_reason_clean(reason)
    if not organization.accepts_jobs:
        raise OperatorActionRefused("not_accepting_jobs", f"the organization is {organization.status}")
    with schema_context(organization.schema_name):
        run = WorkflowRun.objects.filter(pk=run_id).first()
        if run is None:
            raise OperatorActionRefused("not_found", "no such run in this organization")
        try:
            rerun = run_rerun(organization=organization, actor=actor, run=run)
        except RunNotRerunnable as exc:
            raise OperatorActionRefused("not_rerunnable", f"this run can't be run again ({exc})") from exc
    operator_action_record(
        actor=actor,
        action="workflow_run.rerun",
        organization=organization,
        target=f"run {run_id}",
        reason=reason,
        metadata={"new_run": str(rerun.pk)},
    )
    return str(rerun.pk)
