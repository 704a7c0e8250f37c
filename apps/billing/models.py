"""Plans, their versions, and which version an organization is on in each invoice period.

A plan (Free, Pro, Enterprise) is a name; what it gives is a `PlanVersion`: typed columns with
database check constraints, edited by operators in the admin. A version that an organization has
been on (a `OrganizationPlanPeriod` names it) is never changed again, so an invoice period always
knows what applied: an operator changes a plan by saving a new version. `OrganizationSubscription`
is the billing state the Stripe side keeps (status, period end, cancellation, grace): what
apps.billing.entitlements reads, with the version, to answer "may this organization do X now".
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import models
from django.db.models import Q

FREE_PLAN_CODE = "free"

# Entitlements that are features (on or off in a version) and the column each reads.
FEATURES = ("sso", "custom_roles", "byok", "semantic_cache", "audit_export", "webhooks")
# Entitlements that are counted limits, and the version's column for each (NULL there: unlimited).
LIMITS = {
    "members": "max_members",
    "api_keys": "max_api_keys",
    "concurrent_jobs": "max_concurrent_jobs",
    "concurrent_runs": "max_concurrent_runs",
    "map_items": "max_map_items",
    "requests_per_minute": "requests_per_minute",
    "tokens_per_minute": "tokens_per_minute",
    "retention_days": "max_retention_days",
    "knowledge_document_bytes": "max_document_bytes",
    "knowledge_chunks": "max_knowledge_chunks",
}


class Plan(models.Model):
    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    # Offered on the plan page for organizations to pick (a comp or custom plan is not).
    public = models.BooleanField(default=True)
    position = models.PositiveSmallIntegerField(default=0, help_text="Order on the plan page.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("position", "id")

    def __str__(self) -> str:
        return self.name

    def current_version(self) -> PlanVersion | None:
        """The newest version: what an organization moving to this plan gets."""
        return self.versions.order_by("-number").first()


class PlanVersionInUse(Exception):
    """A version an organization has been on is immutable: save a new version instead."""


class PlanVersion(models.Model):
    """What a plan gives, as of one version. Amounts are USD of list price (the ledger's cost)."""

    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField(help_text="1, 2, ... per plan; set on save when empty.")
    created_at = models.DateTimeField(auto_now_add=True)
    # Set the first time an organization is on this version; from then on the row is read-only.
    first_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    base_price_usd = models.DecimalField(
        max_digits=10, decimal_places=2, default=Decimal(0), help_text="Monthly price of the subscription."
    )
    included_usage_usd = models.DecimalField(
        max_digits=12, decimal_places=2, help_text="Usage per invoice period included in the price (list price)."
    )
    overage_allowed = models.BooleanField(
        default=False, help_text="Past the included usage calls continue and are billed; otherwise they stop."
    )
    overage_price_per_usd = models.DecimalField(
        max_digits=8,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="What one USD of list-price usage over the included amount is billed (1.0000: at list price).",
    )
    max_members = models.PositiveIntegerField(null=True, blank=True, help_text="Seats; empty: unlimited.")
    max_api_keys = models.PositiveIntegerField(null=True, blank=True, help_text="Active API keys; empty: unlimited.")
    requests_per_minute = models.PositiveIntegerField()
    tokens_per_minute = models.PositiveIntegerField()
    max_concurrent_jobs = models.PositiveIntegerField()
    max_concurrent_runs = models.PositiveIntegerField(help_text="Workflow runs running at once.")
    max_map_items = models.PositiveIntegerField(help_text="Items one workflow map step may fan out to.")
    min_retention_days = models.PositiveIntegerField(default=0, help_text="Shortest content retention allowed.")
    max_retention_days = models.PositiveIntegerField(help_text="Longest content retention allowed.")
    max_document_bytes = models.PositiveIntegerField(
        null=True, blank=True, help_text="Largest knowledge document upload, in bytes; empty: the platform's 50 MB."
    )
    max_knowledge_chunks = models.PositiveIntegerField(
        null=True, blank=True, help_text="Knowledge chunks stored by the organization; empty: unlimited."
    )
    sso = models.BooleanField(default=False)
    custom_roles = models.BooleanField(default=False)
    byok = models.BooleanField(default=False, help_text="Bring your own provider key.")
    semantic_cache = models.BooleanField(default=False)
    audit_export = models.BooleanField(default=False)
    webhooks = models.BooleanField(default=False)
    past_due_grace_days = models.PositiveSmallIntegerField(
        default=7, help_text="Days a past-due subscription keeps this version before falling back to Free."
    )
    # For the Stripe side: the subscription's base price, and the metered price / meter for usage.
    stripe_price_id = models.CharField(max_length=255, blank=True, default="")
    stripe_usage_price_id = models.CharField(max_length=255, blank=True, default="")
    stripe_meter_event_name = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        ordering = ("plan", "-number")
        constraints = [
            models.UniqueConstraint(fields=["plan", "number"], name="billing_planversion_number_unique"),
            models.CheckConstraint(condition=Q(number__gte=1), name="billing_planversion_number_positive"),
            models.CheckConstraint(
                condition=Q(base_price_usd__gte=0, included_usage_usd__gte=0), name="billing_planversion_amounts"
            ),
            # Overage is priced exactly when it is allowed.
            models.CheckConstraint(
                condition=Q(overage_allowed=True, overage_price_per_usd__gt=0)
                | Q(overage_allowed=False, overage_price_per_usd__isnull=True),
                name="billing_planversion_overage_priced",
            ),
            models.CheckConstraint(
                condition=Q(max_members__isnull=True) | Q(max_members__gte=1), name="billing_planversion_seats"
            ),
            models.CheckConstraint(
                condition=Q(
                    requests_per_minute__gte=1,
                    tokens_per_minute__gte=1,
                    max_concurrent_jobs__gte=1,
                    max_concurrent_runs__gte=1,
                    max_map_items__gte=1,
                ),
                name="billing_planversion_limits_positive",
            ),
            models.CheckConstraint(
                condition=Q(min_retention_days__lte=models.F("max_retention_days")),
                name="billing_planversion_retention_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.plan.code} v{self.number}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and self.first_used_at is not None:
            stored = PlanVersion.objects.filter(pk=self.pk).values_list("first_used_at", flat=True).first()
            if stored is not None:
                raise PlanVersionInUse(f"{self} has been used by an organization: save a new version instead")
        if not self.number:
            latest = PlanVersion.objects.filter(plan_id=self.plan_id).aggregate(n=models.Max("number"))["n"]
            self.number = (latest or 0) + 1
        super().save(*args, **kwargs)


class OrganizationPlanPeriod(models.Model):
    """The plan version an organization was on from `starts_at` until `ends_at` (open: now).

    An invoice period looks up the rows overlapping it to know which version(s) applied."""

    class Reason(models.TextChoices):
        SIGNUP = "signup", "Sign-up"
        CHANGE = "change", "Plan change"
        OPERATOR = "operator", "Operator"
        STRIPE = "stripe", "Stripe subscription"
        MIGRATION = "migration", "Data migration"

    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="plan_periods")
    plan_version = models.ForeignKey(PlanVersion, on_delete=models.PROTECT, related_name="periods")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=20, choices=Reason.choices)

    class Meta:
        ordering = ("organization", "-starts_at")
        constraints = [
            models.UniqueConstraint(
                fields=["organization"], condition=Q(ends_at__isnull=True), name="billing_period_one_open"
            ),
            models.CheckConstraint(
                condition=Q(ends_at__isnull=True) | Q(ends_at__gt=models.F("starts_at")),
                name="billing_period_ends_after_start",
            ),
        ]
        indexes = [models.Index(fields=["organization", "starts_at"], name="billing_period_org_start")]

    def __str__(self) -> str:
        return f"{self.organization_id}: {self.plan_version} from {self.starts_at:%Y-%m-%d}"


class SubscriptionStatus(models.TextChoices):
    # NONE: no paid subscription (Free, or a plan an operator set without one).
    NONE = "none", "None"
    TRIALING = "trialing", "Trialing"
    ACTIVE = "active", "Active"
    PAST_DUE = "past_due", "Past due"
    UNPAID = "unpaid", "Unpaid"
    CANCELED = "canceled", "Canceled"
    INCOMPLETE = "incomplete", "Incomplete"


class OrganizationSubscription(models.Model):
    """The organization's billing state, kept by the Stripe side (webhooks) and operators."""

    organization = models.OneToOneField("tenants.Organization", on_delete=models.CASCADE, related_name="subscription")
    status = models.CharField(max_length=20, choices=SubscriptionStatus.choices, default=SubscriptionStatus.NONE)
    current_period_start = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    cancel_at_period_end = models.BooleanField(default=False)
    past_due_since = models.DateTimeField(null=True, blank=True)
    # When a past-due subscription stops getting its plan; empty: past_due_since + the version's
    # past_due_grace_days.
    grace_until = models.DateTimeField(null=True, blank=True)
    stripe_subscription_id = models.CharField(max_length=255, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=[choice.value for choice in SubscriptionStatus]),
                name="billing_subscription_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(current_period_end__isnull=True)
                | Q(current_period_start__isnull=True)
                | Q(current_period_end__gt=models.F("current_period_start")),
                name="billing_subscription_period_order",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id}: {self.status}"


# --- Operator tools (the admin): credits and plan grants -------------------------------------------


class BillingCredit(models.Model):
    """USD an operator credits an organization, applied against usage billed past what its plan
    includes (oldest expiry first). `applied_usd` grows as invoices use it; what is left counts
    until `expires_at`. Written only by apps.billing.services (audited in the organization's log)."""

    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="billing_credits")
    amount_usd = models.DecimalField(max_digits=10, decimal_places=2)
    applied_usd = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal(0))
    reason = models.CharField(max_length=200)
    granted_by = models.CharField(max_length=254, help_text="The operator's email.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")

    class Meta:
        ordering = ("organization", "-created_at")
        constraints = [
            models.CheckConstraint(condition=Q(amount_usd__gt=0), name="billing_credit_positive"),
            models.CheckConstraint(
                condition=Q(applied_usd__gte=0, applied_usd__lte=models.F("amount_usd")),
                name="billing_credit_applied_within_amount",
            ),
        ]
        indexes = [models.Index(fields=["organization", "expires_at"], name="billing_credit_org_expiry")]

    def __str__(self) -> str:
        return f"${self.amount_usd} credit for {self.organization_id}"

    @property
    def remaining_usd(self) -> Decimal:
        return self.amount_usd - self.applied_usd


class PlanGrant(models.Model):
    """A plan an operator gives an organization without payment: a complimentary plan or a trial
    until a date, or a manual override (open-ended, or until a date). While it is open and not
    past `ends_at` it decides the organization's plan; when it ends the organization returns to
    the plan its subscription pays for (Free without one). At most one open grant per organization."""

    class Kind(models.TextChoices):
        COMP = "comp", "Complimentary plan"
        TRIAL = "trial", "Trial"
        OVERRIDE = "override", "Manual override"

    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="plan_grants")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="grants")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    reason = models.CharField(max_length=200)
    granted_by = models.CharField(max_length=254, help_text="The operator's email.")
    created_at = models.DateTimeField(auto_now_add=True)
    ends_at = models.DateTimeField(null=True, blank=True, help_text="Empty: until revoked (overrides only).")
    ended_at = models.DateTimeField(null=True, blank=True, help_text="Set when the grant ended or was revoked.")

    class Meta:
        ordering = ("organization", "-created_at")
        constraints = [
            models.UniqueConstraint(
                fields=["organization"], condition=Q(ended_at__isnull=True), name="billing_grant_one_open"
            ),
            models.CheckConstraint(
                condition=Q(kind="override") | Q(ends_at__isnull=False), name="billing_grant_comp_trial_end"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["comp", "trial", "override"]), name="billing_grant_kind_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.plan} for {self.organization_id}"


# Stripe bookkeeping (the stripe helper's models live in their own module; imported here so Django finds them).
from apps.billing.stripe_models import StripeCustomer, StripeEvent, StripeInvoice, StripeSubscription  # noqa: E402, F401
