"""What we keep of Stripe (public schema): the organization's customer, the events processed, and
the subscriptions and invoices as of the newest event applied to each.

dj-stripe's tables mirror Stripe's objects too (apps.billing.stripe_webhooks syncs them); these are
the rows our own decisions read and lock: which organization a customer id is (only this mapping,
never an event's metadata, decides which organization an event may change), which events were
already applied (idempotency), and the time of the newest event applied per object (order).
"""

from __future__ import annotations

from django.db import models


class StripeCustomer(models.Model):
    """The organization's Stripe customer: one each, created on first need (Checkout, portal)."""

    organization = models.OneToOneField(
        "tenants.Organization", on_delete=models.CASCADE, related_name="stripe_customer"
    )
    customer_id = models.CharField(max_length=255, unique=True)
    livemode = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "billing"

    def __str__(self) -> str:
        return self.customer_id


class StripeEvent(models.Model):
    """A webhook event, recorded in the transaction that applied it: its id seen again is a no-op."""

    class Outcome(models.TextChoices):
        APPLIED = "applied", "Applied"
        STALE = "stale", "Older than what was applied"
        IGNORED = "ignored", "Not for us (unknown customer or type)"

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    created = models.DateTimeField(help_text="When Stripe created the event.")
    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    processed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "billing"
        indexes = [models.Index(fields=["organization", "processed_at"], name="billing_stripeevent_org")]

    def __str__(self) -> str:
        return f"{self.event_id} {self.type}"


class StripeSubscription(models.Model):
    """A subscription as of the newest event applied to it (`event_created`)."""

    subscription_id = models.CharField(max_length=255, unique=True)
    organization = models.ForeignKey(
        "tenants.Organization", on_delete=models.CASCADE, related_name="stripe_subscriptions"
    )
    customer_id = models.CharField(max_length=255)
    status = models.CharField(max_length=30)
    price_id = models.CharField(max_length=255, blank=True, default="")
    cancel_at_period_end = models.BooleanField(default=False)
    current_period_start = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(help_text="When Stripe created the subscription.")
    event_created = models.DateTimeField(help_text="Time of the newest event applied.")
    event_id = models.CharField(max_length=255)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "billing"
        ordering = ("-created",)

    def __str__(self) -> str:
        return f"{self.subscription_id} ({self.status})"


class StripeInvoice(models.Model):
    """An invoice as of the newest event applied to it; the plan page lists them."""

    invoice_id = models.CharField(max_length=255, unique=True)
    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="stripe_invoices")
    subscription_id = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=30)
    number = models.CharField(max_length=100, blank=True, default="")
    currency = models.CharField(max_length=3, default="usd")
    amount_due = models.BigIntegerField(default=0, help_text="In the currency's smallest unit (cents).")
    amount_paid = models.BigIntegerField(default=0)
    hosted_invoice_url = models.URLField(max_length=1000, blank=True, default="")
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField()
    event_created = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "billing"
        ordering = ("-created",)
        indexes = [models.Index(fields=["organization", "-created"], name="billing_stripeinvoice_org")]

    def __str__(self) -> str:
        return self.number or self.invoice_id
