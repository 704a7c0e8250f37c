"""Plans that mean something: versions and periods, one entitlement function with its cache, the
subscription's grace and cancellation, and the Free plan's platform hard budget."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.billing.models import (
    OrganizationPlanPeriod,
    OrganizationSubscription,
    Plan,
    PlanVersion,
    PlanVersionInUse,
)
from apps.billing.selectors import EntitlementRefused, entitlement, entitlement_require, plan_periods
from apps.billing.services import organization_plan_change, organization_subscription_update
from apps.billing.signals import entitlements_changed
from apps.llm.attempts import budget_refusal
from apps.llm.budgets import BudgetExceeded, Spender, attempt_reserve
from apps.llm.models import Budget
from apps.llm.plan_budget import PLAN_SCOPE, plan_budget_sync
from apps.llm.services import BudgetInvalid, budget_delete, budget_set
from apps.rbac import selectors as rbac_selectors
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR, organization_make

Committing = Callable[..., Any]


def _move(organization: Organization, code: str, capture: Committing) -> None:
    with capture(execute=True):
        organization_plan_change(organization=organization, plan=Plan.objects.get(code=code), actor=TEST_ACTOR)


def test_seeded_plans_differ_where_it_matters(db: None) -> None:
    free, pro, enterprise = (Plan.objects.get(code=code).current_version() for code in ("free", "pro", "enterprise"))
    assert free is not None and pro is not None and enterprise is not None
    assert (free.overage_allowed, free.included_usage_usd, free.sso, free.webhooks) == (
        False,
        Decimal("5.00"),
        False,
        False,
    )
    assert pro.overage_allowed and pro.webhooks and pro.byok and not pro.sso
    assert all(getattr(enterprise, name) for name in ("sso", "custom_roles", "byok", "semantic_cache", "audit_export"))
    # Every organization is in an open period on its plan (the data migration and sign-up open them).
    for organization in Organization.objects.exclude(schema_name="public"):
        period = OrganizationPlanPeriod.objects.get(organization=organization, ends_at__isnull=True)
        assert period.plan_version.plan_id == organization.plan_id


def test_features_and_limits_answer_with_the_right_status_and_code(
    tenant: Organization, django_capture_on_commit_callbacks: Committing
) -> None:
    _move(tenant, "free", django_capture_on_commit_callbacks)
    sso = entitlement(tenant, "sso")
    assert (sso.allowed, sso.status, sso.code) == (False, 402, "plan_feature_unavailable")
    assert "does not include single sign-on" in sso.message and "Free" in sso.message
    seats = entitlement(tenant, "members", used=3)
    assert (seats.allowed, seats.limit, seats.remaining, seats.status, seats.code) == (
        False,
        3,
        0,
        403,
        "plan_limit_reached",
    )
    assert entitlement(tenant, "members", used=2).allowed
    with pytest.raises(EntitlementRefused) as refused:
        entitlement_require(tenant, "webhooks")
    assert refused.value.details == {"entitlement": "webhooks", "plan": "Free"}
    assert not entitlement(tenant, "retention_days", used=31).allowed
    assert entitlement(tenant, "retention_days", used=30).allowed
    _move(tenant, "enterprise", django_capture_on_commit_callbacks)
    assert entitlement(tenant, "sso").allowed and entitlement(tenant, "members", used=3).allowed


def test_a_plan_change_is_versioned_audited_and_the_used_version_is_frozen(
    tenant: Organization, django_capture_on_commit_callbacks: Committing
) -> None:
    start = timezone.now()
    _move(tenant, "pro", django_capture_on_commit_callbacks)
    _move(tenant, "enterprise", django_capture_on_commit_callbacks)
    periods = plan_periods(organization=tenant, start=start, end=timezone.now() + dt.timedelta(seconds=1))
    assert [p.plan_version.plan.code for p in periods][-2:] == ["pro", "enterprise"]
    assert periods[-1].ends_at is None and periods[-2].ends_at == periods[-1].starts_at
    changed = AuditEvent.objects.filter(action="billing.plan_changed").order_by("-id").first()
    assert changed is not None and changed.metadata["to"] == "enterprise v1"
    used = Plan.objects.get(code="pro").current_version()
    assert used is not None and used.first_used_at is not None
    used.max_members = 99
    with pytest.raises(PlanVersionInUse):
        used.save()
    # A new version is what an organization moving to the plan gets from now on.
    newer = PlanVersion.objects.create(
        **{
            f.name: getattr(used, f.name)
            for f in PlanVersion._meta.fields
            if f.name not in ("id", "number", "first_used_at", "created_at")
        }
    )
    assert newer.number == used.number + 1


def test_past_due_keeps_the_plan_through_its_grace_then_free_applies(
    tenant: Organization, django_capture_on_commit_callbacks: Committing
) -> None:
    _move(tenant, "pro", django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        organization_subscription_update(
            organization=tenant,
            status="past_due",
            past_due_since=timezone.now() - dt.timedelta(days=3),
            actor=TEST_ACTOR,
        )
    assert entitlement(tenant, "webhooks").allowed  # Pro's 7 days of grace
    with django_capture_on_commit_callbacks(execute=True):
        organization_subscription_update(
            organization=tenant, past_due_since=timezone.now() - dt.timedelta(days=8), actor=TEST_ACTOR
        )
    webhooks = entitlement(tenant, "webhooks")
    assert not webhooks.allowed and webhooks.plan == "Free" and "past due" in webhooks.message
    assert entitlement(tenant, "requests_per_minute").limit == 60
    with django_capture_on_commit_callbacks(execute=True):
        organization_subscription_update(organization=tenant, status="active", actor=TEST_ACTOR)
    assert entitlement(tenant, "webhooks").allowed


def test_cancellation_ends_at_the_period_end(
    tenant: Organization, django_capture_on_commit_callbacks: Committing
) -> None:
    _move(tenant, "pro", django_capture_on_commit_callbacks)
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        organization_subscription_update(
            organization=tenant,
            status="active",
            cancel_at_period_end=True,
            current_period_start=now - dt.timedelta(days=20),
            current_period_end=now + dt.timedelta(days=10),
            actor=TEST_ACTOR,
        )
    assert entitlement(tenant, "byok").allowed
    with django_capture_on_commit_callbacks(execute=True):
        organization_subscription_update(
            organization=tenant, current_period_end=now - dt.timedelta(seconds=1), actor=TEST_ACTOR
        )
    byok = entitlement(tenant, "byok")
    assert not byok.allowed and byok.fallback == "canceled"


def test_a_plan_change_clears_the_caches_and_one_organization_never_affects_another(
    two_tenants: tuple[Organization, Organization], django_capture_on_commit_callbacks: Committing
) -> None:
    tenant_a, tenant_b = two_tenants
    before_b = entitlement(tenant_b, "members").limit
    _move(tenant_a, "free", django_capture_on_commit_callbacks)
    assert not entitlement(tenant_a, "webhooks").allowed
    rbac_selectors._CACHE[(1, tenant_a.pk)] = (float("inf"), frozenset())
    rbac_selectors._CACHE[(1, tenant_b.pk)] = (float("inf"), frozenset())
    _move(tenant_a, "enterprise", django_capture_on_commit_callbacks)
    # The cached answer was dropped by the change (no TTL wait), and so was A's membership cache.
    assert entitlement(tenant_a, "webhooks").allowed
    assert (1, tenant_a.pk) not in rbac_selectors._CACHE and (1, tenant_b.pk) in rbac_selectors._CACHE
    rbac_selectors._CACHE.pop((1, tenant_b.pk), None)
    assert entitlement(tenant_b, "members").limit == before_b
    # Another process learns the plan with the organization row (its plan id is part of the key).
    stale = Organization.objects.get(pk=tenant_a.pk)
    Organization.objects.filter(pk=tenant_a.pk).update(plan=Plan.objects.get(code="free"))
    assert entitlement(Organization.objects.get(pk=tenant_a.pk), "members").limit == 3
    assert stale.plan_id != Plan.objects.get(code="free").pk


def test_free_stops_at_its_included_usage_with_a_budget_the_organization_cannot_remove(
    tenant: Organization, django_capture_on_commit_callbacks: Committing
) -> None:
    _move(tenant, "free", django_capture_on_commit_callbacks)
    assert plan_budget_sync(organization=tenant) == Decimal("5.00")
    spender = Spender(organization=tenant, principal=TEST_ACTOR)
    with organization_schema(tenant):
        plan_budget = Budget.objects.get(scope=PLAN_SCOPE)
        attempt_reserve(
            spender=spender,
            request_id="r-1",
            attempt=1,
            model_name="m",
            provider="p",
            amount_usd=Decimal("4.00"),
            max_cost_usd=None,
        )
        with pytest.raises(BudgetExceeded) as exceeded:
            attempt_reserve(
                spender=spender,
                request_id="r-2",
                attempt=1,
                model_name="m",
                provider="p",
                amount_usd=Decimal("1.50"),
                max_cost_usd=None,
            )
    refusal = budget_refusal(exceeded.value)
    assert (refusal.http_status, refusal.code) == (402, "plan_usage_exhausted")
    with pytest.raises(BudgetInvalid):
        budget_delete(organization=tenant, budget=plan_budget, actor=TEST_ACTOR)
    with pytest.raises(BudgetInvalid):
        budget_set(organization=tenant, scope=PLAN_SCOPE, period="month", limit_usd=Decimal(1000), actor=TEST_ACTOR)
    # A paid plan bills overage instead: the platform's budget goes.
    _move(tenant, "pro", django_capture_on_commit_callbacks)
    with organization_schema(tenant):
        assert not Budget.objects.filter(scope=PLAN_SCOPE).exists()


def test_a_process_that_got_no_signal_sees_the_change_within_the_cache_lifetime(
    tenant: Organization, django_capture_on_commit_callbacks: Committing, settings: Any
) -> None:
    settings.TENANT_RESOLUTION_CACHE_SECONDS = 0.2  # before the move: its receivers cache the plan too
    _move(tenant, "pro", django_capture_on_commit_callbacks)
    assert entitlement(tenant, "webhooks").allowed  # cached here
    # Another process's write: no signal reaches this one.
    OrganizationSubscription.objects.filter(organization=tenant).update(
        status="past_due", grace_until=timezone.now() - dt.timedelta(seconds=1)
    )
    assert entitlement(tenant, "webhooks").allowed  # still the cached answer
    time.sleep(0.25)
    assert not entitlement(tenant, "webhooks").allowed  # the lifetime is over: read again


def test_a_sign_up_announces_its_entitlements_once_and_a_rolled_back_one_not_at_all(
    db: None, django_capture_on_commit_callbacks: Committing
) -> None:
    announced: list[str] = []

    def receiver(organization: Organization | None = None, **_: Any) -> None:
        announced.append(organization.slug if organization is not None else "")

    entitlements_changed.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            organization = organization_make(slug="announce-once", plan_code="free")  # saves 3 rows
        assert announced == ["announce-once"]
        with organization_schema(organization):  # the one announcement synced the plan's budget
            assert Budget.objects.filter(scope=PLAN_SCOPE).count() == 1

        announced.clear()
        with django_capture_on_commit_callbacks(execute=True):
            # Twice in one transaction, the first inside a savepoint that rolls back: the second counts.
            with transaction.atomic():
                try:
                    with transaction.atomic():
                        organization_plan_change(
                            organization=organization, plan=Plan.objects.get(code="pro"), actor=TEST_ACTOR
                        )
                        raise RuntimeError("rolled back")
                except RuntimeError:
                    pass
                organization_plan_change(organization=organization, plan=Plan.objects.get(code="pro"), actor=TEST_ACTOR)
        assert announced == ["announce-once"]
    finally:
        entitlements_changed.disconnect(receiver)
