"""Shared setup of the metering tests: an organization on a plan version that bills usage on a
meter, with a Stripe customer (in the fake and in dj-stripe), and ledger rows."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import stripe
from django.db import connection
from django.utils import timezone
from djstripe.models import Customer

from apps.billing.models import OrganizationPlanPeriod, Plan, PlanVersion
from apps.llm.models import AttemptStatus, UsageAttempt
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization
from tests.support.fake_stripe import FakeStripe

EVENT_NAME = "cognitionos_usage_test"
COST = Decimal("0.00012345")  # micro-cents: 12345 per row
UNITS = 12345


def meter_create(fake: FakeStripe, event_name: str = EVENT_NAME) -> str:
    client = stripe.StripeClient("sk_test_setup", base_addresses={"api": fake.api_base})
    meter = client.v1.billing.meters.create(
        params={"display_name": "LLM usage", "event_name": event_name, "default_aggregation": {"formula": "sum"}}
    )
    return str(meter.id)


def metered_plan_version(event_name: str = EVENT_NAME) -> PlanVersion:
    """A plan of the test's own (the seeded plans stay as they are) whose version bills usage."""
    pro = PlanVersion.objects.filter(plan__code="pro").order_by("-number").first()
    assert pro is not None
    plan = Plan.objects.create(code=f"meters-{uuid.uuid4().hex[:8]}", name="Metered test plan", public=False)
    version = PlanVersion.objects.get(pk=pro.pk)
    version.pk = None
    version.id = None
    version.plan = plan
    version.number = None  # type: ignore[assignment]
    version.first_used_at = None
    version.overage_allowed = True
    version.overage_price_per_usd = Decimal("1.0000")
    version.stripe_meter_event_name = event_name
    version.save()
    return version


def make_metered(organization: Organization, fake: FakeStripe, *, version: PlanVersion, since: dt.datetime) -> str:
    """Put the organization on `version` from `since` (its earlier periods gone) and give it a Stripe
    customer; returns the customer id."""
    tenant_connection().set_schema_to_public()
    OrganizationPlanPeriod.objects.filter(organization=organization).delete()
    OrganizationPlanPeriod.objects.create(
        organization=organization, plan_version=version, starts_at=since, reason=OrganizationPlanPeriod.Reason.STRIPE
    )
    client = stripe.StripeClient("sk_test_setup", base_addresses={"api": fake.api_base})
    customer = client.v1.customers.create(params={"email": f"billing@{organization.slug}.example.com"})
    Customer.objects.filter(subscriber=organization).delete()
    Customer.objects.create(id=customer.id, subscriber=organization, livemode=False)
    return str(customer.id)


def ledger_add(
    organization: Organization,
    count: int,
    *,
    at: dt.datetime | None = None,
    cost: Decimal = COST,
    paid_by: str = "platform",
    status: str = AttemptStatus.SUCCEEDED,
    prefix: str = "",
) -> list[UsageAttempt]:
    at = at or timezone.now() - dt.timedelta(minutes=5)
    prefix = prefix or uuid.uuid4().hex[:10]
    rows = [
        UsageAttempt(
            request_id=f"req-{prefix}-{n}",
            attempt=1,
            status=status,
            settled_at=None if status == AttemptStatus.RESERVED else at,
            principal_kind="api_key",
            model_name="gpt-4o-mini",
            provider="openai",
            paid_by=paid_by,
            input_tokens=10,
            output_tokens=5,
            reserved_usd=cost,
            cost_usd=cost if status != AttemptStatus.RESERVED else Decimal(0),
        )
        for n in range(count)
    ]
    with organization_schema(organization):
        created = UsageAttempt.objects.bulk_create(rows)
    tenant_connection().set_schema_to_public()
    return created


def unmetered_count(organization: Organization) -> int:
    with organization_schema(organization), connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM llm_usageattempt WHERE metered_at IS NULL AND status <> 'reserved'")
        (count,) = cursor.fetchone()
    tenant_connection().set_schema_to_public()
    return int(count)


def fake_units(fake: FakeStripe, customer: str) -> int:
    """What the fake holds for the customer (each identifier once), in meter units."""
    return sum(
        int(event["payload"]["value"])
        for event in fake.meter_events.values()
        if event["payload"].get("stripe_customer_id") == customer
    )
