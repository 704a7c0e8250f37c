from __future__ import annotations

from decimal import Decimal

from django.db import transaction

from apps.accounts.principals import Principal
from apps.audit.services import audit_record
from apps.llm.models import Budget, BudgetPeriod, BudgetScope
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization


class BudgetInvalid(ValueError):
    pass


@transaction.atomic
def budget_set(
    *,
    organization: Organization,
    scope: str,
    scope_id: str = "",
    period: str,
    limit_usd: Decimal,
    soft_percent: int | None = None,
    hard: bool = True,
    actor: Principal,
) -> Budget:
    """Create or change the budget of a scope and period (the connection is on the organization)."""
    if scope not in BudgetScope.values:
        raise BudgetInvalid(f"scope must be one of {', '.join(BudgetScope.values)}")
    if period not in BudgetPeriod.values:
        raise BudgetInvalid(f"period must be one of {', '.join(BudgetPeriod.values)}")
    if scope == BudgetScope.ORGANIZATION:
        scope_id = ""
    elif not scope_id:
        raise BudgetInvalid(f"a {scope} budget needs the {scope}'s id")
    if not limit_usd.is_finite() or limit_usd < 0:
        raise BudgetInvalid("the limit must be a non-negative amount of USD")
    if soft_percent is not None and not 1 <= soft_percent <= 100:
        raise BudgetInvalid("the soft limit is a percentage from 1 to 100")
    with organization_schema(organization):
        return _budget_store(
            organization=organization,
            scope=scope,
            scope_id=scope_id,
            period=period,
            limit_usd=limit_usd,
            soft_percent=soft_percent,
            hard=hard,
            actor=actor,
        )


def _budget_store(
    *,
    organization: Organization,
    scope: str,
    scope_id: str,
    period: str,
    limit_usd: Decimal,
    soft_percent: int | None,
    hard: bool,
    actor: Principal,
) -> Budget:
    budget, created = Budget.objects.update_or_create(
        scope=scope,
        scope_id=scope_id,
        period=period,
        defaults={"limit_usd": limit_usd, "soft_percent": soft_percent, "hard": hard},
    )
    audit_record(
        organization=organization,
        actor=actor,
        action="budget.created" if created else "budget.changed",
        target=budget,
        metadata={
            "scope": scope,
            "scope_id": scope_id,
            "period": period,
            "limit_usd": str(limit_usd),
            "soft_percent": soft_percent,
            "hard": hard,
        },
    )
    return budget
