"""Writes of plans and subscriptions. Every change that can change what an organization may do
sends `entitlements_changed` once its transaction commits (caches forget; apps.llm resyncs the
platform's plan budget) and is audited in the organization's log."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_save
from django.utils import timezone

from apps.accounts.principals import Principal
from apps.audit.services import audit_record
from apps.billing import stripe_gateway
from apps.billing.models import (
    OrganizationPlanPeriod,
    OrganizationSubscription,
    Plan,
    PlanVersion,
    SubscriptionStatus,
)
from apps.billing.signals import entitlements_changed
from apps.billing.stripe_models import StripeCustomer, StripeSubscription
from apps.tenants.models import Organization


class PlanChangeInvalid(ValueError):
    pass


@dataclass
class _EntitlementsChangedHook:
    """The announcement as an on-commit hook, equal to another for the same organization: a sign-up
    saves the organization, its plan period and its subscription, and one announcement (each costs
    the plan budget's sync) is enough."""

    organization: Organization | None = field(compare=False)
    organization_id: int | None
    ran: bool = field(default=False, compare=False)

    def __call__(self) -> None:
        self.ran = True
        entitlements_changed.send(sender=Organization, organization=self.organization)


def entitlements_changed_send(organization: Organization | None) -> None:
    """Announce the change once the caller's transaction commits (at once outside one), once per
    organization and transaction."""
    hook = _EntitlementsChangedHook(organization, organization.pk if organization is not None else None)
    connection = transaction.get_connection()
    # run_on_commit: Django's list of (savepoint ids, hook, robust) waiting for this commit. A hook of
    # a savepoint rolled back has left it; one that ran is there only under a test's outer transaction.
    if connection.in_atomic_block:
        for _, pending, _ in connection.run_on_commit:
            if pending == hook and not pending.ran:
                pending.organization = organization  # the newest state of the row is announced
                return
    transaction.on_commit(hook)


def _version_of(plan: Plan | PlanVersion) -> PlanVersion:
    if isinstance(plan, PlanVersion):
        return plan
    version = plan.current_version()
    if version is None:
        raise PlanChangeInvalid(f"plan {plan.code!r} has no version")
    return version


def _period_open(
    *, organization: Organization, version: PlanVersion, reason: str, now: dt.datetime
) -> OrganizationPlanPeriod:
    if version.first_used_at is None:
        # Used from now on: the admin shows it read-only and a change saves a new version.
        PlanVersion.objects.filter(pk=version.pk, first_used_at__isnull=True).update(first_used_at=now)
    return OrganizationPlanPeriod.objects.create(
        organization=organization, plan_version=version, starts_at=now, reason=reason
    )


def organization_plan_change(
    *,
    organization: Organization,
    plan: Plan | PlanVersion,
    reason: str = OrganizationPlanPeriod.Reason.CHANGE,
    actor: Principal,
    now: dt.datetime | None = None,
) -> OrganizationPlanPeriod:
    """Move the organization to a plan (its newest version) or to a given version: the open period
    ends now and a new one starts, the organization's `plan` follows, the change is audited and
    every cache of the plan is dropped once committed. Moving to the version already applying is a
    no-op (returns the open period)."""
    if reason not in OrganizationPlanPeriod.Reason.values:
        raise PlanChangeInvalid(f"reason must be one of {', '.join(OrganizationPlanPeriod.Reason.values)}")
    version = _version_of(plan)
    now = now or timezone.now()
    with transaction.atomic():
        locked = Organization.objects.select_for_update().get(pk=organization.pk)
        current = (
            OrganizationPlanPeriod.objects.select_for_update()
            .select_related("plan_version__plan")
            .filter(organization=locked, ends_at__isnull=True)
            .first()
        )
        if current is not None and current.plan_version_id == version.pk:
            return current
        if current is not None:
            # A period can't end before it starts (two changes in one instant): the newer wins.
            if current.starts_at >= now:
                now = current.starts_at + dt.timedelta(microseconds=1)
            current.ends_at = now
            current.save(update_fields=["ends_at"])
        period = _period_open(organization=locked, version=version, reason=reason, now=now)
        if locked.plan_id != version.plan_id:
            locked.plan_id = version.plan_id
            locked.save(update_fields=["plan", "updated_at"])
        organization.plan_id = version.plan_id
        organization.plan = version.plan
        audit_record(
            organization=locked,
            actor=actor,
            action="billing.plan_changed",
            target=period,
            metadata={
                "from": str(current.plan_version) if current is not None else None,
                "to": str(version),
                "reason": reason,
            },
        )
        entitlements_changed_send(locked)
    return period


SUBSCRIPTION_FIELDS = frozenset(
    {
        "status",
        "current_period_start",
        "current_period_end",
        "cancel_at_period_end",
        "past_due_since",
        "grace_until",
        "stripe_subscription_id",
    }
)


def organization_subscription_update(
    *, organization: Organization, actor: Principal, **changes: Any
) -> OrganizationSubscription:
    """Set the organization's subscription state (the Stripe webhooks, operators). Becoming past due
    starts the grace period (`past_due_since`, unless given); paying again ends it. Audited."""
    unknown = set(changes) - SUBSCRIPTION_FIELDS
    if unknown:
        raise PlanChangeInvalid(f"unknown subscription fields: {', '.join(sorted(unknown))}")
    if "status" in changes and changes["status"] not in SubscriptionStatus.values:
        raise PlanChangeInvalid(f"status must be one of {', '.join(SubscriptionStatus.values)}")
    with transaction.atomic():
        subscription, _ = OrganizationSubscription.objects.select_for_update().get_or_create(
            organization_id=organization.pk
        )
        before = {name: getattr(subscription, name) for name in changes}
        overdue = (SubscriptionStatus.PAST_DUE, SubscriptionStatus.UNPAID)
        status = changes.get("status", subscription.status)
        if status in overdue and subscription.status not in overdue and "past_due_since" not in changes:
            changes["past_due_since"] = timezone.now()
        if status not in overdue:
            changes.setdefault("past_due_since", None)
            changes.setdefault("grace_until", None)
        for name, value in changes.items():
            setattr(subscription, name, value)
        subscription.save()
        audit_record(
            organization=organization,
            actor=actor,
            action="billing.subscription_updated",
            target=subscription,
            metadata={
                name: {"from": _jsonable(before.get(name)), "to": _jsonable(value)} for name, value in changes.items()
            },
        )
        entitlements_changed_send(organization)
    return subscription


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _organization_saved(sender: type[Organization], instance: Organization, created: bool, **_: Any) -> None:
    """A new organization starts a period on its plan's newest version (sign-up); an organization
    whose plan was changed on its row directly (the admin, a script) gets its period rolled over
    too, so the invoice period still knows which version applied."""
    if instance.is_public:
        return
    current = OrganizationPlanPeriod.objects.filter(organization_id=instance.pk, ends_at__isnull=True).first()
    if current is not None and current.plan_version.plan_id == instance.plan_id:
        return
    version = PlanVersion.objects.filter(plan_id=instance.plan_id).order_by("-number").first()
    if version is None:
        return
    now = timezone.now()
    if current is not None:
        now = max(now, current.starts_at + dt.timedelta(microseconds=1))
        OrganizationPlanPeriod.objects.filter(pk=current.pk).update(ends_at=now)
    reason = OrganizationPlanPeriod.Reason.SIGNUP if created else OrganizationPlanPeriod.Reason.OPERATOR
    _period_open(organization=instance, version=version, reason=reason, now=now)
    OrganizationSubscription.objects.get_or_create(organization=instance)
    # Once committed (a new organization's schema exists by then): caches, the plan's budget.
    entitlements_changed_send(instance)


def _version_saved(sender: type[PlanVersion], instance: PlanVersion, **_: Any) -> None:
    # An operator's edit of an unused version (or a new one): any organization may be affected.
    entitlements_changed_send(None)


def _state_saved(sender: type[Any], instance: Any, **_: Any) -> None:
    # Saved outside the services above (the admin, the Stripe side's own writes).
    entitlements_changed_send(instance.organization)


def receivers_connect() -> None:
    post_save.connect(_organization_saved, sender=Organization, dispatch_uid="billing.organization_saved")
    post_save.connect(_version_saved, sender=PlanVersion, dispatch_uid="billing.version_saved")
    post_save.connect(_state_saved, sender=OrganizationSubscription, dispatch_uid="billing.subscription_saved")
    post_save.connect(_state_saved, sender=OrganizationPlanPeriod, dispatch_uid="billing.period_saved")


# --- Stripe (stripe helper): Checkout and the billing portal; every call through stripe_gateway ---


def _stripe_customer_ensure(*, organization: Organization) -> str:
    """The organization's Stripe customer id, created on first need. The create's idempotency key is
    the organization's, so two concurrent first needs (or a lost answer) make one customer."""
    found = StripeCustomer.objects.filter(organization_id=organization.pk).values_list("customer_id", flat=True).first()
    if found:
        return found
    customer = stripe_gateway.customer_create(
        organization_id=organization.pk,
        email=organization.email,
        name=organization.name,
        # dj-stripe links a customer to its subscriber (the organization) by this metadata key.
        metadata={
            "organization_id": str(organization.pk),
            "organization_slug": organization.slug,
            settings.DJSTRIPE_SUBSCRIBER_CUSTOMER_KEY: str(organization.pk),
        },
    )
    stripe_gateway.djstripe_mirror(customer)
    row, _ = StripeCustomer.objects.get_or_create(
        organization_id=organization.pk,
        defaults={"customer_id": customer["id"], "livemode": bool(customer.get("livemode"))},
    )
    return row.customer_id


def checkout_session_create(
    *, organization: Organization, plan: Plan | PlanVersion, success_url: str, cancel_url: str, actor: Principal
) -> str:
    """Start an upgrade through Stripe Checkout; the URL to send the member to. The plan changes when
    Stripe's webhook says the subscription is paid (apps.billing.stripe_webhooks), not here.
    An organization with a live subscription changes plan in the billing portal instead."""
    version = _version_of(plan)
    if not version.stripe_price_id:
        raise PlanChangeInvalid(f"the {version.plan.name} plan can't be bought online")
    live = StripeSubscription.objects.filter(
        organization_id=organization.pk, status__in=("active", "trialing", "past_due", "unpaid")
    ).first()
    if live is not None:
        raise PlanChangeInvalid("this organization already has a subscription: change it in the billing portal")
    customer_id = _stripe_customer_ensure(organization=organization)
    session = stripe_gateway.checkout_session_create(
        customer_id=customer_id,
        price_id=version.stripe_price_id,
        success_url=success_url,
        cancel_url=cancel_url,
        client_reference_id=str(organization.pk),
        metadata={"organization_id": str(organization.pk), "plan_version": str(version.pk)},
        # One per click: the SDK resends this key on its own retries, so a retry never makes a second session.
        idempotency_key=f"cognitionos-checkout-{organization.pk}-{uuid.uuid4().hex}",
    )
    audit_record(
        organization=organization,
        actor=actor,
        action="billing.checkout_started",
        metadata={"plan": version.plan.code, "version": version.number, "session": session["id"]},
    )
    return str(session["url"])


def billing_portal_session_create(*, organization: Organization, return_url: str, actor: Principal) -> str:
    """A Stripe billing portal session (payment methods, invoices, cancellation); its URL."""
    customer_id = _stripe_customer_ensure(organization=organization)
    session = stripe_gateway.billing_portal_session_create(
        customer_id=customer_id,
        return_url=return_url,
        idempotency_key=f"cognitionos-portal-{organization.pk}-{uuid.uuid4().hex}",
    )
    audit_record(
        organization=organization, actor=actor, action="billing.portal_opened", metadata={"session": session["id"]}
    )
    return str(session["url"])
