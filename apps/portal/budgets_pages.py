"""The portal's Budgets page (issue 12): the organization's budgets with their current period's
spend, reserved and remaining amounts; set, change and remove them (apps.llm's services, which
write the audit events). Seeing needs budgets:read, changing budgets:manage."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from apps.accounts.principals import Principal
from apps.llm.calls import BudgetInvalid, budget_delete, budget_set, budget_statuses
from apps.llm.models import Budget
from apps.portal.caller import caller_organization, caller_user
from apps.portal.settings_forms import BudgetForm
from apps.portal.settings_selectors import budget_target_labels, budget_target_of, budget_targets
from apps.rbac.decorators import member_may, member_permissions, permission_required
from apps.rbac.permissions import Permission


def _actor(request: HttpRequest) -> Principal:
    return dataclasses.replace(Principal.for_user(caller_user(request)), permissions=member_permissions(request))


@permission_required({"GET": Permission.BUDGETS_READ, "POST": Permission.BUDGETS_MANAGE})
@never_cache
def budgets(request: HttpRequest) -> HttpResponse:
    """The budgets, and (for budgets:manage) the form that sets one; `?edit=<id>` fills the form
    with a budget to change it."""
    organization = caller_organization(request)
    may_manage = member_may(request, Permission.BUDGETS_MANAGE)
    targets = budget_targets(organization=organization)
    statuses = budget_statuses()
    editing = None
    if may_manage and request.method == "GET" and request.GET.get("edit", "").isdigit():
        editing = next(
            (s.budget for s in statuses if s.budget.pk == int(request.GET["edit"]) and s.budget.scope != "plan"), None
        )
    initial = (
        {
            "target": budget_target_of(editing),
            "period": editing.period,
            "limit_usd": editing.limit_usd.normalize(),
            "soft_percent": editing.soft_percent,
            "hard": editing.hard,
        }
        if editing is not None
        else {"hard": True}
    )
    form = BudgetForm(request.POST or None, keys=targets.keys, members=targets.members, initial=initial)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            scope, scope_id = form.scope()
            try:
                budget_set(
                    organization=organization,
                    scope=scope,
                    scope_id=scope_id,
                    period=form.cleaned_data["period"],
                    limit_usd=form.cleaned_data["limit_usd"],
                    soft_percent=form.cleaned_data["soft_percent"],
                    hard=form.cleaned_data["hard"],
                    actor=_actor(request),
                )
            except BudgetInvalid as invalid:
                form.add_error(None, str(invalid))
            else:
                messages.success(request, "Budget saved: calls are held against it from now on.")
                return redirect("portal-budgets")
        status = 400
    labels = budget_target_labels(organization=organization, budgets=[s.budget for s in statuses])
    return render(
        request,
        "portal/budgets/budgets.html",
        {
            "organization": organization,
            "rows": [
                (
                    budget_status,
                    labels[budget_status.budget.pk],
                    _used_percent(budget_status.spent_usd + budget_status.reserved_usd, budget_status.budget.limit_usd),
                )
                for budget_status in statuses
            ],
            "form": form if may_manage else None,
            "editing": editing,
            "may_manage": may_manage,
        },
        status=status,
    )


def _used_percent(used: Decimal, limit: Decimal) -> int:
    """How much of the limit is spent or held, 0 to 100, for the gauge."""
    if limit <= 0:
        return 100 if used > 0 else 0
    return int(min(Decimal(100), used * 100 / limit))


@permission_required({"POST": Permission.BUDGETS_MANAGE})
@require_POST
def budget_remove(request: HttpRequest, budget_id: int) -> HttpResponse:
    # The connection is on the organization's schema: another organization's budget is not there.
    budget = Budget.objects.filter(pk=budget_id).first()
    if budget is None:
        raise Http404("no such budget")
    try:
        budget_delete(organization=caller_organization(request), budget=budget, actor=_actor(request))
    except BudgetInvalid as refused:  # the plan's budget: set by the plan, not the organization
        messages.error(request, str(refused))
        return redirect("portal-budgets")
    messages.success(request, "Budget removed: calls are no longer held against it.")
    return redirect("portal-budgets")


urlpatterns: list[URLPattern] = [
    path("budgets/", budgets, name="portal-budgets"),
    path("budgets/<int:budget_id>/remove/", budget_remove, name="portal-budget-remove"),
]
