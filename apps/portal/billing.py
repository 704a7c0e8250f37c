"""What the Plan and billing page shows, gathered in one place: the plan version the organization is
on and what it gives, its subscription's state, the billing period's usage from the public daily
rollups (apps.billing.usage_selectors) against what the plan includes, the projected overage with
the credits that pay for it, the invoices, and the plans it may move to.

A constant number of queries whatever the organization's volume: none of it reads the ledger.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from apps.billing.models import FEATURES, FREE_PLAN_CODE, OrganizationSubscription, Plan, PlanVersion
from apps.billing.selectors import AppliedPlan, applied_plan_compute
from apps.billing.stripe_models import StripeInvoice
from apps.billing.stripe_selectors import stripe_customer_id_for, stripe_invoice_list, stripe_subscription_current
from apps.billing.usage_selectors import (
    BillingPeriod,
    PeriodUsage,
    calendar_month,
    cents,
    credit_balance_usd,
    period_usage,
)
from apps.knowledge.services import MAX_DOCUMENT_BYTES
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_by_id

# What each limit and feature is called on the page, in the order shown (the knowledge limits follow
# them: plan_limits).
LIMIT_LABELS: tuple[tuple[str, str, str], ...] = (
    # (version column, label, unit after the number)
    ("max_members", "Members", "seats"),
    ("max_api_keys", "API keys", "active keys"),
    ("requests_per_minute", "Requests", "per minute"),
    ("tokens_per_minute", "Tokens", "per minute"),
    ("max_concurrent_jobs", "Jobs at once", "jobs"),
    ("max_concurrent_runs", "Workflow runs at once", "runs"),
    ("max_map_items", "Map step fan-out", "items"),
    ("max_retention_days", "Content retention", "days at most"),
)
FEATURE_LABELS: dict[str, str] = {
    "sso": "Single sign-on (SAML)",
    "custom_roles": "Custom roles",
    "byok": "Your own provider keys",
    "semantic_cache": "Semantic cache",
    "audit_export": "Audit log export",
    "webhooks": "Webhooks",
}
assert set(FEATURE_LABELS) == set(FEATURES), "every plan feature needs its label on the plan page"

STATUS_TEXT: dict[str, str] = {
    "none": "No paid subscription",
    "trialing": "Trial",
    "active": "Active",
    "past_due": "Payment past due",
    "unpaid": "Unpaid",
    "canceled": "Canceled",
    "incomplete": "Waiting for the first payment",
}


@dataclass(frozen=True)
class PlanLimit:
    label: str
    value: str  # "25 seats", "Unlimited"


@dataclass(frozen=True)
class PlanOffer:
    """A plan as the comparison shows it."""

    plan: Plan
    version: PlanVersion
    limits: list[PlanLimit]
    features: list[tuple[str, bool]]
    current: bool
    upgrade: bool  # dearer than the current plan: offered through Checkout


def plan_limits(version: PlanVersion) -> list[PlanLimit]:
    rows = [
        PlanLimit("Included usage", f"${version.included_usage_usd:,.2f} a month (list price)"),
        PlanLimit(
            "Past the included usage",
            f"billed at ${_rate(version.overage_price_per_usd)} per $1 of usage"
            if version.overage_allowed and version.overage_price_per_usd is not None
            else "calls stop until the next period",
        ),
    ]
    for column, label, unit in LIMIT_LABELS:
        value = getattr(version, column)
        rows.append(PlanLimit(label, "Unlimited" if value is None else f"{value:,} {unit}"))
    # Never unlimited: an empty size is the platform's bound, which also caps a larger one
    # (apps.knowledge.services.document_bytes_limit).
    document_bytes = min(version.max_document_bytes or MAX_DOCUMENT_BYTES, MAX_DOCUMENT_BYTES)
    rows.append(PlanLimit("Knowledge document size", f"{filesizeformat(document_bytes)} at most"))
    chunks = version.max_knowledge_chunks
    rows.append(PlanLimit("Knowledge chunks stored", "Unlimited" if chunks is None else f"{chunks:,} chunks"))
    return rows


def _rate(value: Decimal) -> str:
    """A price per dollar with its cents and any finer digits it has: 1.0000 → 1.00, 0.9250 → 0.925."""
    digits = f"{value.normalize():f}"
    whole, _, fraction = digits.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def plan_features(version: PlanVersion) -> list[tuple[str, bool]]:
    return [(FEATURE_LABELS[name], bool(getattr(version, name))) for name in FEATURES]


def _price(version: PlanVersion) -> Decimal:
    return version.base_price_usd


def plan_offers(*, current: PlanVersion, subscribed: bool) -> list[PlanOffer]:
    """The public plans (and the current one, public or not), in their page order, each at its
    newest version (the current plan at the version the organization is on). An upgrade goes
    through Checkout: a dearer plan with a Stripe price, while the organization has no live
    subscription (one that has changes plan in the Stripe billing portal)."""
    plans = Plan.objects.filter(public=True) | Plan.objects.filter(pk=current.plan_id)
    offers = []
    for plan in plans.distinct().order_by("position", "id"):
        version = current if plan.pk == current.plan_id else plan.current_version()
        if version is None:
            continue
        offers.append(
            PlanOffer(
                plan=plan,
                version=version,
                limits=plan_limits(version),
                features=plan_features(version),
                current=plan.pk == current.plan_id,
                upgrade=plan.pk != current.plan_id
                and plan.code != FREE_PLAN_CODE
                and _price(version) > _price(current)
                and bool(version.stripe_price_id)
                and not subscribed,
            )
        )
    return offers


def billing_period_of(subscription: OrganizationSubscription | None, now: dt.datetime) -> BillingPeriod:
    """The subscription's current period, or the UTC calendar month without one (Free)."""
    if (
        subscription is not None
        and subscription.current_period_start is not None
        and subscription.current_period_end is not None
        and subscription.current_period_start <= now < subscription.current_period_end
    ):
        return BillingPeriod(subscription.current_period_start, subscription.current_period_end)
    return calendar_month(now)


@dataclass(frozen=True)
class Overage:
    """What usage past the included amount costs: so far and projected, before and after credits."""

    price_per_usd: Decimal | None  # None: the plan doesn't bill overage (calls stop instead)
    so_far_usd: Decimal
    projected_usd: Decimal | None
    credits_usd: Decimal

    @property
    def billed(self) -> bool:
        return self.price_per_usd is not None

    def _charge(self, over: Decimal) -> Decimal:
        return cents(over * (self.price_per_usd or Decimal(0)))

    @property
    def so_far_charge_usd(self) -> Decimal:
        return self._charge(self.so_far_usd)

    @property
    def projected_charge_usd(self) -> Decimal | None:
        return None if self.projected_usd is None else self._charge(self.projected_usd)

    @property
    def projected_after_credits_usd(self) -> Decimal | None:
        charge = self.projected_charge_usd
        return None if charge is None else max(Decimal(0), charge - self.credits_usd)


@dataclass(frozen=True)
class BillingOverview:
    organization: Organization
    applied: AppliedPlan  # the version that applies now (Free after a lapsed grace or a cancellation)
    version: PlanVersion
    subscription: OrganizationSubscription | None
    usage: PeriodUsage
    overage: Overage
    offers: list[PlanOffer]
    subscribed: bool  # a live Stripe subscription: plan changes happen in the billing portal
    customer: bool  # a Stripe customer exists: the billing portal can be opened

    @property
    def status_text(self) -> str:
        status = self.subscription.status if self.subscription is not None else "none"
        return STATUS_TEXT.get(status, status)

    @property
    def overage_rate(self) -> str:
        price = self.overage.price_per_usd
        return "" if price is None else f"${_rate(price)}"

    @property
    def current_limits(self) -> list[PlanLimit]:
        return plan_limits(self.version)

    @property
    def current_features(self) -> list[tuple[str, bool]]:
        return plan_features(self.version)

    @property
    def today(self) -> dt.date:
        return self.usage.now.astimezone(dt.UTC).date()

    @property
    def upgrades(self) -> list[PlanOffer]:
        return [offer for offer in self.offers if offer.upgrade]

    def chart_data(self) -> dict[str, Any]:
        """Cumulative usage by day (null for the days to come), the included amount and the
        projection's straight line from the period's start to its end, as plain numbers for
        static/portal/billing.js."""
        today = self.usage.now.astimezone(dt.UTC).date()
        running = Decimal(0)
        used: list[float | None] = []
        for day in self.usage.days:
            running += day.cost_usd
            used.append(float(running) if day.day <= today else None)
        times = [int(dt.datetime.combine(day.day, dt.time(), tzinfo=dt.UTC).timestamp()) for day in self.usage.days]
        projected = self.usage.projected_usd
        line: list[float | None] = [None] * len(times)
        if projected is not None and times:
            # The pace so far, drawn from the start of the first day to the end of the last.
            span = self.usage.period.end.timestamp() - self.usage.period.start.timestamp()
            for index, at in enumerate(times):
                share = min(1.0, max(0.0, (at + 86_400 - self.usage.period.start.timestamp()) / span))
                line[index] = round(float(projected) * share, 8)
        return {
            "time": times,
            "used": used,
            "included": [float(self.usage.included_usd)] * len(times),
            "projected": line,
        }


def billing_overview(*, organization: Organization, now: dt.datetime | None = None) -> BillingOverview:
    """The page's figures, read fresh: the organization's row and its applying plan come from the
    database, not this process's caches, so the page shows a plan change (a Stripe webhook handled
    by another process a moment ago) at once instead of up to TENANT_RESOLUTION_CACHE_SECONDS later."""
    now = now or timezone.now()
    organization = organization_by_id(organization.pk) or organization
    applied, _holds = applied_plan_compute(organization, now=now)
    version = applied.version
    subscription = OrganizationSubscription.objects.filter(organization=organization).first()
    period = billing_period_of(subscription, now)
    usage = period_usage(organization=organization, period=period, included_usd=version.included_usage_usd, now=now)
    subscribed = stripe_subscription_current(organization) is not None
    price = version.overage_price_per_usd if version.overage_allowed else None
    overage = Overage(
        price_per_usd=price,
        so_far_usd=usage.over_included_usd,
        projected_usd=usage.projected_over_usd,
        credits_usd=credit_balance_usd(organization=organization, now=now),
    )
    return BillingOverview(
        organization=organization,
        applied=applied,
        version=version,
        subscription=subscription,
        usage=usage,
        overage=overage,
        offers=plan_offers(current=version, subscribed=subscribed),
        subscribed=subscribed,
        customer=stripe_customer_id_for(organization) is not None,
    )


@dataclass(frozen=True)
class InvoiceRow:
    invoice: StripeInvoice
    amount: Decimal  # in the currency's major unit: what was paid, or what is due

    @property
    def usd(self) -> bool:
        return self.invoice.currency.lower() == "usd"


def invoice_rows(*, organization: Organization, limit: int) -> list[InvoiceRow]:
    """The newest invoices (as Stripe's webhooks last reported them), amounts in dollars."""
    rows = []
    for invoice in stripe_invoice_list(organization, limit=limit):
        cents_amount = invoice.amount_paid if invoice.status == "paid" else invoice.amount_due
        rows.append(InvoiceRow(invoice=invoice, amount=Decimal(cents_amount) / 100))
    return rows
