"""Reads for the Budgets page: what a budget can apply to (keys by name, members by email) and the
names of what existing budgets apply to. Bounded lists: a picker with thousands of entries helps
no one, and the page's cost must not grow with the organization."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from apps.accounts.models import User
from apps.apikeys.models import ApiKey
from apps.llm.models import Budget, BudgetScope
from apps.rbac.models import Membership
from apps.tenants.models import Organization

# The most keys and members offered in the "Applies to" list (newest keys, earliest members).
TARGETS_MAX = 500


@dataclass(frozen=True)
class BudgetTargets:
    keys: list[tuple[int, str]]
    members: list[tuple[int, str]]


def budget_targets(*, organization: Organization) -> BudgetTargets:
    """The organization's usable keys (not revoked) and its members, for the budget form (2 queries)."""
    keys = list(
        ApiKey.objects.filter(organization=organization, revoked_at__isnull=True)
        .order_by("-created_at", "-pk")
        .values_list("pk", "name")[:TARGETS_MAX]
    )
    members = list(
        Membership.objects.filter(organization=organization)
        .order_by("user__email")
        .values_list("user_id", "user__email")[:TARGETS_MAX]
    )
    return BudgetTargets(keys=keys, members=members)


def budget_target_labels(*, organization: Organization, budgets: Iterable[Budget]) -> dict[int, str]:
    """What each budget applies to, as people read it, by budget id ("Organization", "Key: ci",
    "Member: ada@example.com"); a key or member since gone is named by its id."""
    budgets = list(budgets)
    key_ids = {int(b.scope_id) for b in budgets if b.scope == BudgetScope.KEY and b.scope_id.isdigit()}
    user_ids = {int(b.scope_id) for b in budgets if b.scope == BudgetScope.USER and b.scope_id.isdigit()}
    key_names = (
        dict(ApiKey.objects.filter(organization=organization, pk__in=key_ids).values_list("pk", "name"))
        if key_ids
        else {}
    )
    emails = dict(User.objects.filter(pk__in=user_ids).values_list("pk", "email")) if user_ids else {}
    labels: dict[int, str] = {}
    for budget in budgets:
        if budget.scope == BudgetScope.ORGANIZATION:
            labels[budget.pk] = "Organization"
        elif budget.scope == "plan":  # the platform's budget of a plan without overage (apps.llm.plan_budget)
            labels[budget.pk] = "Plan: included usage"
        elif budget.scope == BudgetScope.KEY:
            name = key_names.get(int(budget.scope_id)) if budget.scope_id.isdigit() else None
            labels[budget.pk] = f"Key: {name}" if name is not None else f"Key #{budget.scope_id} (gone)"
        else:
            email = emails.get(int(budget.scope_id)) if budget.scope_id.isdigit() else None
            labels[budget.pk] = f"Member: {email}" if email is not None else f"User #{budget.scope_id} (gone)"
    return labels


def budget_target_of(budget: Budget) -> str:
    """The budget form's `target` value for an existing budget."""
    if budget.scope == BudgetScope.ORGANIZATION:
        return "organization"
    return f"{'key' if budget.scope == BudgetScope.KEY else 'user'}:{budget.scope_id}"
