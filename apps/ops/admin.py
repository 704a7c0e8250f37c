"""The operators' admin (platform host only, staff with a second factor: apps.ops.admin_site).

- Organizations: plan, status, members, this period's usage and spend (public rollups), open work
  (counted on one organization's page only: it lives in its schema); suspend, resume, change plan,
  schedule or cancel deletion, ask for support access. Each action goes through apps.ops.services,
  which records it in the organization's audit log and in the operator log.
- The operator log (OperatorAction) and support access grants, read-only but for revoking.
- Deployments (/admin/ops/deployments/): health, breaker, error rate, latency; reset or open the
  breaker, disable or enable.
- Jobs and workflow runs (/admin/ops/work/): of one chosen organization (never a scan of every
  schema), by status and age; requeue, cancel, rerun.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from apps.billing.models import Plan
from apps.ops import selectors
from apps.ops.models import OperatorAction, SupportAccessGrant
from apps.ops.services import (
    OPERATOR_REASON_MAX,
    OperatorActionRefused,
    operator_breaker_open,
    operator_breaker_reset,
    operator_deletion_cancel,
    operator_deletion_schedule,
    operator_deployment_enabled_set,
    operator_job_cancel,
    operator_job_requeue,
    operator_organization_resume,
    operator_organization_suspend,
    operator_plan_change,
    operator_principal,
    operator_run_cancel,
    operator_run_rerun,
    support_access_grant,
    support_access_revoke,
)
from apps.rbac.selectors import membership_list
from apps.tenants.models import Organization


def _reason_field() -> forms.CharField:
    return forms.CharField(
        max_length=OPERATOR_REASON_MAX,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Kept in the organization's audit log and in the operator log.",
    )


class ReasonForm(forms.Form):
    reason = _reason_field()


class PlanChangeForm(forms.Form):
    plan = forms.ModelChoiceField(queryset=Plan.objects.order_by("position", "id"), to_field_name="code")
    reason = _reason_field()


class DeletionForm(forms.Form):
    grace_days = forms.IntegerField(min_value=1, max_value=90, initial=30, help_text="Cancellable until then.")
    reason = _reason_field()


SUPPORT_DURATIONS = [
    (minutes, f"{minutes // 60} h" if minutes >= 60 else f"{minutes} min") for minutes in (30, 60, 120, 240, 480)
]


class SupportAccessForm(forms.Form):
    duration_minutes = forms.TypedChoiceField(
        choices=SUPPORT_DURATIONS, coerce=int, initial=60, label="Duration", help_text="At most 8 hours."
    )
    reason = _reason_field()


# action name (in the URL) -> (title, form); which apply to an organization: _action_applies
ORGANIZATION_ACTIONS: dict[str, tuple[str, type[forms.Form]]] = {
    "suspend": ("Suspend organization", ReasonForm),
    "resume": ("Resume organization", ReasonForm),
    "plan": ("Change plan", PlanChangeForm),
    "delete": ("Schedule deletion", DeletionForm),
    "cancel-deletion": ("Cancel scheduled deletion", ReasonForm),
    "support": ("Ask for support access", SupportAccessForm),
}


def _staff(request: HttpRequest) -> bool:
    return bool(request.user.is_active and request.user.is_staff)


@admin.register(Organization)
class OrganizationOperatorAdmin(admin.ModelAdmin[Organization]):
    list_display = (
        "slug",
        "name",
        "plan",
        "status",
        "member_count_display",
        "period_requests_display",
        "period_spend_display",
        "created_at",
    )
    list_filter = ("status", "plan")
    search_fields = ("slug", "name")
    list_per_page = 50
    show_full_result_count = False  # no COUNT(*) of every organization on each page
    fields = ("slug", "name", "status", "plan", "mfa_required", "deletion_due_at", "created_at", "updated_at")
    readonly_fields = fields
    change_form_template = "admin/ops/organization/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Organization]:
        queryset = super().get_queryset(request).exclude(schema_name="public")
        return selectors.organizations_with_usage(queryset, since=selectors.period_start())

    @admin.display(description="Members", ordering="member_count")
    def member_count_display(self, obj: Organization) -> int:
        return int(getattr(obj, "member_count", 0))

    @admin.display(description="Requests this month", ordering="period_requests")
    def period_requests_display(self, obj: Organization) -> int:
        return int(getattr(obj, "period_requests", 0))

    @admin.display(description="Spend this month (USD)", ordering="period_spend_usd")
    def period_spend_display(self, obj: Organization) -> str:
        return f"{getattr(obj, 'period_spend_usd', 0):.2f}"

    # Operators see and act; nobody adds, edits or deletes organizations here (services do).
    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _staff(request)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _staff(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<int:organization_id>/operate/<slug:action>/",
                self.admin_site.admin_view(self.operate_view),
                name="ops_organization_operate",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        organization = self.get_object(request, object_id)
        extra: dict[str, Any] = dict(extra_context or {})
        if organization is not None:
            extra.update(
                # get_object read it through get_queryset: with this period's usage and members.
                usage=organization,
                period_start=selectors.period_start(),
                open_work=selectors.organization_open_work(organization=organization),
                members=list(membership_list(organization=organization)[:50]),
                grants=list(selectors.support_grants_active(organization=organization)),
                recent_actions=list(OperatorAction.objects.filter(organization=organization)[:20]),
                operator_actions=[
                    (name, title)
                    for name, (title, _form) in ORGANIZATION_ACTIONS.items()
                    if _action_applies(name, organization)
                ],
            )
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def operate_view(self, request: HttpRequest, organization_id: int, action: str) -> HttpResponse:
        if not _staff(request):
            raise PermissionDenied
        if action not in ORGANIZATION_ACTIONS:
            raise Http404("no such action")
        organization = get_object_or_404(Organization.objects.select_related("plan"), pk=organization_id)
        if organization.is_public:
            raise Http404("no such organization")
        title, form_class = ORGANIZATION_ACTIONS[action]
        form = form_class(request.POST or None)
        back = reverse("admin:tenants_organization_change", args=[organization.pk])
        if request.method == "POST" and form.is_valid():
            try:
                done = _organization_act(request, organization, action, form.cleaned_data)
            except OperatorActionRefused as refused:
                form.add_error(None, str(refused))
            else:
                messages.success(request, done)
                return HttpResponseRedirect(back)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{title}: {organization.slug}",
            "action_title": title,
            "organization": organization,
            "form": form,
            "opts": self.model._meta,
            "back_url": back,
        }
        return TemplateResponse(request, "admin/ops/action_form.html", context)


def _action_applies(action: str, organization: Organization) -> bool:
    status = organization.status
    if action == "suspend":
        return status in (Organization.Status.ACTIVE, Organization.Status.PAST_DUE)
    if action == "resume":
        return status == Organization.Status.SUSPENDED
    if action == "delete":
        return status != Organization.Status.DELETING
    if action == "cancel-deletion":
        return status == Organization.Status.DELETING
    return status != Organization.Status.DELETING or action == "support"


def _organization_act(request: HttpRequest, organization: Organization, action: str, data: dict[str, Any]) -> str:
    user = request.user
    actor = operator_principal(user)  # type: ignore[arg-type]
    reason = data["reason"]
    if action == "suspend":
        operator_organization_suspend(organization=organization, actor=actor, reason=reason)
        return f"{organization.slug} is suspended: its API calls, jobs and portal are refused."
    if action == "resume":
        operator_organization_resume(organization=organization, actor=actor, reason=reason)
        return f"{organization.slug} is active again."
    if action == "plan":
        operator_plan_change(organization=organization, plan_code=data["plan"].code, actor=actor, reason=reason)
        return f"{organization.slug} is now on {data['plan'].name}."
    if action == "delete":
        scheduled = operator_deletion_schedule(
            organization=organization, actor=actor, reason=reason, grace_days=data["grace_days"]
        )
        return f"{organization.slug} will be deleted at {scheduled.deletion_due_at} unless cancelled."
    if action == "cancel-deletion":
        operator_deletion_cancel(organization=organization, actor=actor, reason=reason)
        return f"The deletion of {organization.slug} is cancelled."
    grant = support_access_grant(
        operator=user,  # type: ignore[arg-type]
        organization=organization,
        reason=reason,
        duration=dt.timedelta(minutes=data["duration_minutes"]),
    )
    return (
        f"Read-only access to {organization.slug}'s portal until {grant.expires_at:%Y-%m-%d %H:%M} UTC; "
        "its owners see it in their audit log."
    )


@admin.register(OperatorAction)
class OperatorActionAdmin(admin.ModelAdmin[OperatorAction]):
    list_display = ("occurred_at", "actor_label", "action", "organization_slug", "target", "reason")
    list_filter = ("action",)
    search_fields = ("organization_slug", "actor_label", "target")
    date_hierarchy = "occurred_at"
    list_per_page = 100
    show_full_result_count = False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _staff(request)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _staff(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SupportAccessGrant)
class SupportAccessGrantAdmin(admin.ModelAdmin[SupportAccessGrant]):
    list_display = ("organization", "operator", "reason", "created_at", "expires_at", "state", "first_used_at")
    list_select_related = ("organization", "operator")
    search_fields = ("organization__slug", "operator__email")
    actions = ("revoke_grants",)
    list_per_page = 100

    @admin.display(description="State")
    def state(self, obj: SupportAccessGrant) -> str:
        if obj.revoked_at is not None:
            return "revoked"
        return "active" if obj.is_active() else "expired"

    @admin.action(description="Revoke the selected grants now")
    def revoke_grants(self, request: HttpRequest, queryset: QuerySet[SupportAccessGrant]) -> None:
        actor = operator_principal(request.user)  # type: ignore[arg-type]
        for grant in queryset.select_related("organization", "operator")[:100]:
            support_access_revoke(grant=grant, actor=actor)
        messages.success(request, "Revoked.")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _staff(request)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _staff(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # asked for from the organization's page, with a reason

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _staff(request) and obj is None  # the changelist's revoke action only

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Deployments and work: views of the site (apps.ops.admin_site.OperatorAdminSite.get_urls) -----


class DeploymentActionForm(forms.Form):
    provider = forms.CharField(max_length=30)
    model = forms.CharField(max_length=100)
    operation = forms.ChoiceField(choices=[(name, name) for name in ("reset", "open", "disable", "enable")])
    reason = forms.CharField(max_length=OPERATOR_REASON_MAX, required=False)


def deployments_view(request: HttpRequest) -> HttpResponse:
    """Every deployment's health, and the actions on it (one form per row and action)."""
    from apps.llm.calls import DeploymentUnknown, deployment_health_list

    if not _staff(request):
        raise PermissionDenied
    if request.method == "POST":
        form = DeploymentActionForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            actor = operator_principal(request.user)  # type: ignore[arg-type]
            target = {"provider": data["provider"], "model": data["model"], "actor": actor, "reason": data["reason"]}
            try:
                if data["operation"] == "reset":
                    operator_breaker_reset(**target)
                elif data["operation"] == "open":
                    operator_breaker_open(**target)
                else:
                    operator_deployment_enabled_set(**target, enabled=data["operation"] == "enable")
            except (OperatorActionRefused, DeploymentUnknown) as refused:
                messages.error(request, str(refused))
            else:
                messages.success(request, f"{data['provider']}/{data['model']}: {data['operation']} done.")
        else:
            messages.error(request, "The action was not understood.")
        return HttpResponseRedirect(reverse("admin:ops_deployments"))
    context = {
        **admin.site.each_context(request),
        "title": "Deployments",
        "deployments": deployment_health_list(),
    }
    return TemplateResponse(request, "admin/ops/deployments.html", context)


class WorkFilterForm(forms.Form):
    organization = forms.SlugField(max_length=40, help_text="The organization's slug (required: one at a time).")
    kind = forms.ChoiceField(choices=[("job", "Jobs"), ("run", "Workflow runs")], initial="job")
    status = forms.ChoiceField(choices=[("", "Any"), *((s, s) for s in selectors.WORK_STATUSES)], required=False)
    older_than_hours = forms.IntegerField(min_value=0, max_value=24 * 365, required=False, label="Older than (hours)")


class WorkActionForm(forms.Form):
    organization = forms.SlugField(max_length=40)
    item = forms.UUIDField()
    operation = forms.ChoiceField(choices=[(name, name) for name in ("requeue", "cancel", "cancel-run", "rerun")])
    reason = forms.CharField(max_length=OPERATOR_REASON_MAX)


def work_view(request: HttpRequest) -> HttpResponse:
    """Jobs or workflow runs of one organization (chosen first: each lives in its own schema)."""
    if not _staff(request):
        raise PermissionDenied
    if request.method == "POST":
        return _work_act(request)
    form = WorkFilterForm(request.GET or None)
    rows: list[selectors.WorkRow] = []
    organization: Organization | None = None
    if form.is_valid():
        data = form.cleaned_data
        organization = Organization.objects.exclude(schema_name="public").filter(slug=data["organization"]).first()
        if organization is None:
            form.add_error("organization", "No organization of that slug.")
        else:
            hours = data.get("older_than_hours")
            rows = selectors.organization_work(
                organization=organization,
                kind=data["kind"],
                status=data.get("status") or "",
                older_than=dt.timedelta(hours=hours) if hours else None,
            )
    context = {
        **admin.site.each_context(request),
        "title": "Jobs and workflow runs",
        "form": form,
        "organization": organization,
        "rows": rows,
        "page_size": selectors.WORK_PAGE_SIZE,
        "now": timezone.now(),
        "query": request.GET.urlencode(),
    }
    return TemplateResponse(request, "admin/ops/work.html", context)


def _work_act(request: HttpRequest) -> HttpResponse:
    form = WorkActionForm(request.POST)
    back = reverse("admin:ops_work") + (f"?{request.POST.get('query', '')[:500]}" if request.POST.get("query") else "")
    if not form.is_valid():
        messages.error(request, "Give a reason for the action.")
        return HttpResponseRedirect(back)
    data = form.cleaned_data
    organization = Organization.objects.exclude(schema_name="public").filter(slug=data["organization"]).first()
    if organization is None:
        raise Http404("no such organization")
    actor = operator_principal(request.user)  # type: ignore[arg-type]
    item, reason = str(data["item"]), data["reason"]
    try:
        if data["operation"] == "requeue":
            operator_job_requeue(organization=organization, job_id=item, actor=actor, reason=reason)
        elif data["operation"] == "cancel":
            operator_job_cancel(organization=organization, job_id=item, actor=actor, reason=reason)
        elif data["operation"] == "cancel-run":
            operator_run_cancel(organization=organization, run_id=item, actor=actor, reason=reason)
        else:
            operator_run_rerun(organization=organization, run_id=item, actor=actor, reason=reason)
    except OperatorActionRefused as refused:
        messages.error(request, str(refused))
    else:
        messages.success(request, f"{data['operation']} done for {item} in {organization.slug}.")
    return HttpResponseRedirect(back)


# Anomalies (apps.ops.anomaly_admin, the anomaly detector's page).
from apps.ops import anomaly_admin  # noqa: E402, F401
