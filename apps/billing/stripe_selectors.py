"""Reads of what we keep of Stripe (apps.billing.stripe_models): no Stripe call."""

from __future__ import annotations

from apps.billing.stripe_models import StripeCustomer, StripeInvoice, StripeSubscription
from apps.tenants.models import Organization

MAX_INVOICES = 100


def stripe_customer_id_for(organization: Organization) -> str | None:
    """The organization's Stripe customer id, or None before its first Checkout or portal visit."""
    return StripeCustomer.objects.filter(organization_id=organization.pk).values_list("customer_id", flat=True).first()


def stripe_invoice_list(organization: Organization, *, limit: int = 24) -> list[StripeInvoice]:
    """The organization's invoices, newest first, as the webhooks last reported them."""
    limit = max(1, min(limit, MAX_INVOICES))
    return list(StripeInvoice.objects.filter(organization_id=organization.pk).order_by("-created", "-id")[:limit])


def stripe_subscription_current(organization: Organization) -> StripeSubscription | None:
    """The organization's newest subscription that hasn't ended, if any."""
    return (
        StripeSubscription.objects.filter(organization_id=organization.pk)
        .exclude(status__in=("canceled", "incomplete_expired"))
        .order_by("-created")
        .first()
    )
