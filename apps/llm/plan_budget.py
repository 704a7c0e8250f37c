"""The platform's hard budget for plans without overage (Free): a monthly `plan` budget in the
organization's schema whose limit is the plan's included usage. The reservation statement
(apps.llm.budgets) counts it with the organization's own budgets, in the same atomic UPDATE, so
concurrent calls can't pass it. The organization can't change or delete it (apps.llm.services
refuses the `plan` scope); it follows the plan: set when the plan version that applies has no
overage, removed when it has."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from django.db import DatabaseError, transaction

from apps.billing.selectors import applied_plan_compute
from apps.billing.signals import entitlements_changed
from apps.llm.models import Budget, BudgetPeriod
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization

logger = logging.getLogger(__name__)

PLAN_SCOPE = "plan"
PLAN_SCOPE_ID = "included"


def plan_budget_limit(organization: Organization) -> Decimal | None:
    """The hard monthly limit the plan sets, or None when usage past what is included is billed.
    Uncached: it runs when the entitlements change, maybe before the receiver that empties the cache."""
    version = applied_plan_compute(organization)[0].version
    return None if version.overage_allowed else version.included_usage_usd


def plan_budget_sync(*, organization: Organization) -> Decimal | None:
    """Make the organization's `plan` budget match its plan now; returns the limit (None: none)."""
    limit = plan_budget_limit(organization)
    with organization_schema(organization), transaction.atomic():
        if limit is None:
            Budget.objects.filter(scope=PLAN_SCOPE).delete()
        else:
            Budget.objects.update_or_create(
                scope=PLAN_SCOPE,
                scope_id=PLAN_SCOPE_ID,
                period=BudgetPeriod.MONTH,
                defaults={"limit_usd": limit, "hard": True, "soft_percent": 80},
            )
    return limit


def _entitlements_changed(organization: Organization | None = None, **_: Any) -> None:
    if organization is None:
        # An operator saved a plan version: a version in use never changes, so no organization's
        # budget does (the hourly llm_plan_budgets_sync_all covers a new Free version's fallback).
        return
    try:
        plan_budget_sync(organization=organization)
    except DatabaseError:
        # A schema not there (any more): the hourly sync sets it when there is one.
        logger.exception("plan budget of %s not synced", organization.slug)


def receivers_connect() -> None:
    entitlements_changed.connect(_entitlements_changed, dispatch_uid="llm.plan_budget_sync")
