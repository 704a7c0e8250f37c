"""Operator tools (the Django admin's actions): credits, complimentary plans, trials and their
extensions, manual plan overrides. Each is one atomic function that checks the operator, writes
the row and records the event in the organization's audit log with the operator's name.

(Services of apps.billing, in a module of their own: the Stripe and entitlement services are
written beside them at the same time.)
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.utils import timezone

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.audit.services import audit_record
from apps.billing.models import (
    FREE_PLAN_CODE,
    BillingCredit,
    OrganizationPlanPeriod,
    OrganizationSubscription,
    Plan,
    PlanGrant,
    SubscriptionStatus,
)
from apps.billing.services import organization_plan_change
from apps.tenants.models import Organization

# Bounds: what one operator action may grant.
CREDIT_MAX_USD = Decimal("100000.00")
GRANT_MAX_DAYS = 366 * 3
REASON_MAX = 200


class OperatorRefused(Exception):
    """The action was not done; `code` names the rule, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _operator_actor(operator: User) -> Principal:
    if not (operator.is_active and operator.is_staff):
        raise OperatorRefused("permission_denied", "only operators (staff) grant credits and plans")
    return Principal(kind="operator", id=str(operator.pk), label=operator.email)


def reason_clean(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise OperatorRefused("reason_required", "say why (it is kept in the organization's audit log)")
    if len(reason) > REASON_MAX:
        raise OperatorRefused("reason_too_long", f"the reason is at most {REASON_MAX} characters")
    return reason


def end_check(ends_at: dt.datetime | None, *, now: dt.datetime, required: bool) -> dt.datetime | None:
    """An end date for a grant or a credit: in the future, within GRANT_MAX_DAYS."""
    if ends_at is None:
        if required:
            raise OperatorRefused("end_required", "a complimentary plan or a trial needs an end date")
        return None
    if ends_at <= now:
        raise OperatorRefused("end_in_past", "the end date must be in the future")
    if ends_at > now + dt.timedelta(days=GRANT_MAX_DAYS):
        raise OperatorRefused("end_too_far", f"the end date is at most {GRANT_MAX_DAYS} days away")
    return ends_at


def credit_amount_clean(amount_usd: Decimal | str) -> Decimal:
    """A credit's amount in dollars and cents, more than 0 and at most CREDIT_MAX_USD."""
    try:
        amount = Decimal(str(amount_usd)).quantize(Decimal("0.01"))
    except InvalidOperation as exc:
        raise OperatorRefused("amount_invalid", "the amount is a number of dollars, such as 25.00") from exc
    if not amount.is_finite() or amount <= 0 or amount > CREDIT_MAX_USD:
        raise OperatorRefused("amount_invalid", f"the amount is more than $0 and at most ${CREDIT_MAX_USD:,}")
    return amount


@transaction.atomic
def credit_grant(
    *,
    organization: Organization,
    amount_usd: Decimal | str,
    reason: str,
    operator: User,
    expires_at: dt.datetime | None = None,
) -> BillingCredit:
    """Credit the organization `amount_usd` against usage billed past its plan's included amount."""
    actor = _operator_actor(operator)
    amount = credit_amount_clean(amount_usd)
    now = timezone.now()
    credit = BillingCredit.objects.create(
        organization=organization,
        amount_usd=amount,
        reason=reason_clean(reason),
        granted_by=operator.email,
        expires_at=end_check(expires_at, now=now, required=False),
    )
    audit_record(
        organization=organization,
        actor=actor,
        action="billing.credit_granted",
        target=credit,
        metadata={
            "amount_usd": str(amount),
            "reason": credit.reason,
            "expires_at": credit.expires_at.isoformat() if credit.expires_at else None,
        },
    )
    return credit


@transaction.atomic
def credit_apply(*, organization: Organization, charge_usd: Decimal, reference: str) -> Decimal:
    """Use the organization's credits (soonest expiry first) against an overage charge; returns
    what they covered. Called when an invoice's overage is known (`reference` names it)."""
    if charge_usd <= 0:
        return Decimal(0)
    now = timezone.now()
    credits = (
        BillingCredit.objects.select_for_update()
        .filter(organization=organization)
        .exclude(expires_at__lte=now)
        .order_by("expires_at", "created_at")  # NULLs (no expiry) last
    )
    left = charge_usd
    used: list[dict[str, str]] = []
    for credit in credits:
        if left <= 0:
            break
        take = min(credit.remaining_usd, left)
        if take <= 0:
            continue
        credit.applied_usd += take
        credit.save(update_fields=["applied_usd"])
        left -= take
        used.append({"credit": str(credit.pk), "usd": str(take)})
    covered = charge_usd - left
    if covered:
        audit_record(
            organization=organization,
            actor=Principal.system("billing"),
            action="billing.credit_applied",
            metadata={
                "reference": reference[:200],
                "charge_usd": str(charge_usd),
                "covered_usd": str(covered),
                "credits": used,
            },
        )
    return covered


def _open_grant(organization: Organization) -> PlanGrant | None:
    return PlanGrant.objects.select_for_update().filter(organization=organization, ended_at__isnull=True).first()


@transaction.atomic
def plan_grant(
    *,
    organization: Organization,
    plan: Plan,
    kind: PlanGrant.Kind | str,
    reason: str,
    operator: User,
    ends_at: dt.datetime | None = None,
) -> PlanGrant:
    """Put the organization on `plan` without payment: a complimentary plan or a trial until
    `ends_at`, or a manual override (until `ends_at`, or until revoked). An open grant is replaced."""
    actor = _operator_actor(operator)
    kind = PlanGrant.Kind(kind)
    now = timezone.now()
    ends_at = end_check(ends_at, now=now, required=kind != PlanGrant.Kind.OVERRIDE)
    reason = reason_clean(reason)
    # The organization row is the lock: two operators granting at once are serialized here.
    Organization.objects.select_for_update().filter(pk=organization.pk).first()
    previous = _open_grant(organization)
    if previous is not None:
        previous.ended_at = now
        previous.save(update_fields=["ended_at"])
    grant = PlanGrant.objects.create(
        organization=organization, plan=plan, kind=kind, reason=reason, granted_by=operator.email, ends_at=ends_at
    )
    from_plan = _plan_code(organization)
    organization_plan_change(
        organization=organization, plan=plan, reason=OrganizationPlanPeriod.Reason.OPERATOR, actor=actor
    )
    audit_record(
        organization=organization,
        actor=actor,
        action="billing.plan_granted",
        target=grant,
        metadata={
            "kind": kind.value,
            "plan": plan.code,
            "from_plan": from_plan,
            "ends_at": ends_at.isoformat() if ends_at else None,
            "reason": reason,
            "replaced_grant": previous.pk if previous is not None else None,
        },
    )
    return grant


@transaction.atomic
def plan_grant_extend(*, grant: PlanGrant, ends_at: dt.datetime, reason: str, operator: User) -> PlanGrant:
    """Move an open grant's end later (a trial extension, a longer complimentary plan)."""
    actor = _operator_actor(operator)
    reason = reason_clean(reason)
    locked = PlanGrant.objects.select_for_update().select_related("organization").get(pk=grant.pk)
    now = timezone.now()
    if locked.ended_at is not None or (locked.ends_at is not None and locked.ends_at <= now):
        raise OperatorRefused("grant_ended", "this grant has ended: grant the plan again instead")
    ends_at_checked = end_check(ends_at, now=now, required=True)
    assert ends_at_checked is not None
    if locked.ends_at is not None and ends_at_checked <= locked.ends_at:
        raise OperatorRefused("not_later", "an extension ends later than the grant does now")
    previous_end = locked.ends_at
    locked.ends_at = ends_at_checked
    locked.save(update_fields=["ends_at"])
    audit_record(
        organization=locked.organization,
        actor=actor,
        action="billing.plan_grant_extended",
        target=locked,
        metadata={
            "kind": locked.kind,
            "plan": locked.plan.code,
            "from": previous_end.isoformat() if previous_end else None,
            "to": ends_at_checked.isoformat(),
            "reason": reason,
        },
    )
    return locked


@transaction.atomic
def plan_grant_end(*, grant: PlanGrant, reason: str, operator: User | None = None) -> PlanGrant:
    """End a grant now (an operator revoking it, or `operator=None`: its end date passed) and
    return the organization to the plan its subscription pays for, Free without one."""
    actor = _operator_actor(operator) if operator is not None else Principal.system("billing")
    reason = reason_clean(reason)
    locked = PlanGrant.objects.select_for_update().select_related("organization", "plan").get(pk=grant.pk)
    if locked.ended_at is not None:
        return locked
    now = timezone.now()
    locked.ended_at = now
    locked.save(update_fields=["ended_at"])
    organization = locked.organization
    back_to = _paid_plan(organization)
    from_plan = _plan_code(organization)
    organization_plan_change(
        organization=organization, plan=back_to, reason=OrganizationPlanPeriod.Reason.OPERATOR, actor=actor
    )
    audit_record(
        organization=organization,
        actor=actor,
        action="billing.plan_grant_ended",
        target=locked,
        metadata={
            "kind": locked.kind,
            "plan": locked.plan.code,
            "from_plan": from_plan,
            "to_plan": back_to.code,
            "reason": reason,
        },
    )
    return locked


def plan_grants_expire(*, now: dt.datetime | None = None) -> int:
    """End every grant whose end date has passed (the periodic task's body); returns how many."""
    now = now or timezone.now()
    ended = 0
    for grant in PlanGrant.objects.filter(ended_at__isnull=True, ends_at__lte=now).order_by("ends_at")[:1000]:
        plan_grant_end(grant=grant, reason="the grant's end date passed")
        ended += 1
    return ended


def _plan_code(organization: Organization) -> str:
    """The plan the organization is on before the change (for the audit event)."""
    period = (
        OrganizationPlanPeriod.objects.filter(organization=organization, ends_at__isnull=True)
        .select_related("plan_version__plan")
        .first()
    )
    return period.plan_version.plan.code if period is not None else ""


# A subscription in these states still pays for (or is about to pay for) its plan.
_PAYING = (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING, SubscriptionStatus.PAST_DUE)


def _paid_plan(organization: Organization) -> Plan:
    """The plan the organization's subscription pays for (its newest period that Stripe set, while
    the subscription is paying); Free without one."""
    subscription = OrganizationSubscription.objects.filter(organization=organization).first()
    if subscription is not None and subscription.status in _PAYING:
        period = (
            OrganizationPlanPeriod.objects.filter(
                organization=organization, reason=OrganizationPlanPeriod.Reason.STRIPE
            )
            .select_related("plan_version__plan")
            .order_by("-starts_at")
            .first()
        )
        if period is not None:
            return period.plan_version.plan
    return Plan.objects.get(code=FREE_PLAN_CODE)
