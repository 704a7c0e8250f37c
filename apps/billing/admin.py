"""Operators edit plans here. A version an organization has been on is read-only: "Save as new"
makes the next version, which organizations get when they next change plan (or when an operator
moves them, apps.billing.services.organization_plan_change)."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminSplitDateTime
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from apps.accounts.models import User
from apps.billing.models import (
    BillingCredit,
    OrganizationPlanPeriod,
    OrganizationSubscription,
    Plan,
    PlanGrant,
    PlanVersion,
)
from apps.billing.operator_services import (
    REASON_MAX,
    OperatorRefused,
    credit_amount_clean,
    credit_grant,
    end_check,
    plan_grant,
    plan_grant_end,
    plan_grant_extend,
    reason_clean,
)


class PlanVersionInline(admin.TabularInline[PlanVersion, Plan]):
    model = PlanVersion
    extra = 0
    fields = ("number", "included_usage_usd", "overage_allowed", "max_members", "first_used_at")
    readonly_fields = fields
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin[Plan]):
    list_display = ("code", "name", "public", "position")
    search_fields = ("code", "name")
    inlines = (PlanVersionInline,)


@admin.register(PlanVersion)
class PlanVersionAdmin(admin.ModelAdmin[PlanVersion]):
    list_display = ("plan", "number", "included_usage_usd", "overage_allowed", "max_members", "first_used_at")
    list_filter = ("plan",)
    save_as = True  # "Save as new": the way to change a version that is in use

    def get_readonly_fields(self, request: HttpRequest, obj: PlanVersion | None = None) -> Any:
        if obj is not None and obj.first_used_at is not None:
            return [field.name for field in PlanVersion._meta.fields]
        return ("first_used_at",)

    def save_model(self, request: HttpRequest, obj: PlanVersion, form: Any, change: bool) -> None:
        if not change:  # a new version, or "Save as new" of a used one
            obj.number = 0  # the next number of its plan
            obj.first_used_at = None
        super().save_model(request, obj, form, change)

    def has_delete_permission(self, request: HttpRequest, obj: PlanVersion | None = None) -> bool:
        return obj is None or obj.first_used_at is None


@admin.register(OrganizationPlanPeriod)
class OrganizationPlanPeriodAdmin(admin.ModelAdmin[OrganizationPlanPeriod]):
    list_display = ("organization", "plan_version", "starts_at", "ends_at", "reason")
    list_filter = ("reason",)
    search_fields = ("organization__slug",)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(OrganizationSubscription)
class OrganizationSubscriptionAdmin(admin.ModelAdmin[OrganizationSubscription]):
    list_display = ("organization", "status", "current_period_end", "cancel_at_period_end", "grace_until")
    list_filter = ("status",)
    search_fields = ("organization__slug",)


# --- Operator tools: credits and plan grants (each through apps.billing.operator_services, which
# checks the operator and records the event in the organization's audit log) ----------------------


def _operator(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


def _refused_as_form_error(form: forms.ModelForm[Any], refused: OperatorRefused) -> None:
    field = {
        "amount_invalid": "amount_usd",
        "reason_required": "reason",
        "reason_too_long": "reason",
        "end_required": "ends_at",
        "end_in_past": "ends_at",
        "end_too_far": "ends_at",
    }.get(refused.code)
    if field in form.fields:
        form.add_error(field, str(refused))
    else:
        form.add_error(None, str(refused))


class BillingCreditForm(forms.ModelForm[BillingCredit]):
    class Meta:
        model = BillingCredit
        fields = ("organization", "amount_usd", "reason", "expires_at")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            if data.get("amount_usd") is not None:
                credit_amount_clean(data["amount_usd"])
            reason_clean(data.get("reason") or "")
            end_check(data.get("expires_at"), now=timezone.now(), required=False)
        except OperatorRefused as refused:
            _refused_as_form_error(self, refused)
        return data


@admin.register(BillingCredit)
class BillingCreditAdmin(admin.ModelAdmin[BillingCredit]):
    """Add a credit (audited); existing credits are read-only (what invoices used of them is kept)."""

    form = BillingCreditForm
    list_display = ("organization", "amount_usd", "applied_usd", "expires_at", "granted_by", "reason", "created_at")
    list_select_related = ("organization",)
    search_fields = ("organization__slug", "reason", "granted_by")

    def get_readonly_fields(self, request: HttpRequest, obj: BillingCredit | None = None) -> Any:
        if obj is not None:
            return [f.name for f in BillingCredit._meta.fields]
        return ()

    def has_delete_permission(self, request: HttpRequest, obj: BillingCredit | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: BillingCredit, form: Any, change: bool) -> None:
        if change:
            return  # read-only once granted
        created = credit_grant(
            organization=obj.organization,
            amount_usd=obj.amount_usd,
            reason=obj.reason,
            operator=_operator(request),
            expires_at=obj.expires_at,
        )
        obj.pk = created.pk
        obj.granted_by = created.granted_by
        obj.created_at = created.created_at


class PlanGrantForm(forms.ModelForm[PlanGrant]):
    class Meta:
        model = PlanGrant
        fields = ("organization", "plan", "kind", "ends_at", "reason")
        help_texts = {
            "kind": "Complimentary plan and trial need an end date; a manual override may be open-ended.",
            "ends_at": "When the organization returns to the plan its subscription pays for (Free without one).",
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            reason_clean(data.get("reason") or "")
            end_check(data.get("ends_at"), now=timezone.now(), required=data.get("kind") != PlanGrant.Kind.OVERRIDE)
        except OperatorRefused as refused:
            _refused_as_form_error(self, refused)
        return data


class GrantExtendForm(forms.Form):
    """The admin action's form: a new end date for each selected grant, and why."""

    ends_at = forms.SplitDateTimeField(label="New end date (UTC)", widget=AdminSplitDateTime)
    reason = forms.CharField(label="Reason", max_length=REASON_MAX)


@admin.register(PlanGrant)
class PlanGrantAdmin(admin.ModelAdmin[PlanGrant]):
    """Give an organization a plan without payment (comp, trial, override); extend or end it with
    the actions. Saving a grant moves the organization to its plan at once."""

    form = PlanGrantForm
    list_display = ("organization", "plan", "kind", "ends_at", "ended_at", "granted_by", "reason", "created_at")
    list_filter = ("kind", ("ended_at", admin.EmptyFieldListFilter))
    list_select_related = ("organization", "plan")
    search_fields = ("organization__slug", "reason", "granted_by")
    actions = ("extend_grants", "end_grants")

    def get_readonly_fields(self, request: HttpRequest, obj: PlanGrant | None = None) -> Any:
        if obj is not None:
            return [f.name for f in PlanGrant._meta.fields]
        return ()

    def has_delete_permission(self, request: HttpRequest, obj: PlanGrant | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: PlanGrant, form: Any, change: bool) -> None:
        if change:
            return  # changes are the actions (extend, end), each audited
        created = plan_grant(
            organization=obj.organization,
            plan=obj.plan,
            kind=obj.kind,
            reason=obj.reason,
            operator=_operator(request),
            ends_at=obj.ends_at,
        )
        obj.pk = created.pk
        obj.granted_by = created.granted_by
        obj.created_at = created.created_at

    @admin.action(description="Extend the selected grants (trial extension; audited)")
    def extend_grants(self, request: HttpRequest, queryset: QuerySet[PlanGrant]) -> TemplateResponse | None:
        form = GrantExtendForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            done, failed = [], []
            for grant in queryset.select_related("organization"):
                try:
                    plan_grant_extend(
                        grant=grant,
                        ends_at=form.cleaned_data["ends_at"],
                        reason=form.cleaned_data["reason"],
                        operator=_operator(request),
                    )
                except OperatorRefused as refused:
                    failed.append(f"{grant.organization.slug}: {refused}")
                else:
                    done.append(grant.organization.slug)
            if done:
                self.message_user(request, f"Extended: {', '.join(done)}.", messages.SUCCESS)
            for line in failed:
                self.message_user(request, f"Not extended: {line}.", messages.ERROR)
            return None
        return TemplateResponse(
            request,
            "admin/billing/grant_extend.html",
            {
                **self.admin_site.each_context(request),
                "title": "Extend plan grants",
                "grants": queryset,
                "form": form,
                "opts": self.model._meta,
                "action": "extend_grants",
            },
        )

    @admin.action(description="End the selected grants now (back to the paid plan or Free; audited)")
    def end_grants(self, request: HttpRequest, queryset: QuerySet[PlanGrant]) -> None:
        ended = []
        for grant in queryset.filter(ended_at__isnull=True).select_related("organization"):
            plan_grant_end(grant=grant, reason="ended by an operator in the admin", operator=_operator(request))
            ended.append(grant.organization.slug)
        self.message_user(request, f"Ended: {', '.join(ended) or 'none open'}.", messages.SUCCESS)
