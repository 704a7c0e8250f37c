"""Usage metering to Stripe Billing Meters (apps.billing.metering): the real stripe SDK against the
fake Stripe server; every row of the ledger that bills reaches the customer's meter once."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.utils import timezone

from apps.billing import stripe_gateway
from apps.billing.metering import (
    UNITS_PER_USD,
    metering_organization_ids,
    metering_target,
    meters_push,
    meters_reconcile,
    row_identifier,
)
from apps.llm.models import AttemptStatus
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization
from tests.billing.meters_support import (
    COST,
    fake_units,
    ledger_add,
    make_metered,
    meter_create,
    metered_plan_version,
    unmetered_count,
)
from tests.support.fake_stripe import FakeStripe

NOW = timezone.now()
PERIOD = f"{(NOW - dt.timedelta(minutes=5)):%Y-%m}"


@pytest.fixture(autouse=True)
def _no_backoff_left() -> None:
    cache.delete_many([f"billing:meters:backoff:{n}" for n in range(1, 200)])


def _push_all(organization: Organization, *, rounds: int = 20, **options: object) -> int:
    """Push until nothing is left (a beat's worth of pushes), ignoring the backoff between them."""
    sent = 0
    for _ in range(rounds):
        report = meters_push(organization=organization, ignore_backoff=True, **options)  # type: ignore[arg-type]
        sent += report.sent
        if not report.unavailable and unmetered_count(organization) == 0:
            return sent
    raise AssertionError(f"still unmetered after {rounds} pushes: {unmetered_count(organization)}")


def test_push_sends_each_billable_row_once_in_batches(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    organization, _ = two_tenants
    meter_create(fake_stripe)
    customer = make_metered(organization, fake_stripe, version=metered_plan_version(), since=NOW - dt.timedelta(days=3))
    billable = ledger_add(organization, 250)
    ledger_add(organization, 7, paid_by="organization")  # the organization's own provider key: not ours to bill
    ledger_add(organization, 5, cost=Decimal(0), status=AttemptStatus.FAILED)  # cost nothing
    ledger_add(organization, 3, status=AttemptStatus.RESERVED)  # in flight: not settled yet
    ledger_add(organization, 4, at=NOW - dt.timedelta(days=10))  # before the metered plan began

    report = meters_push(organization=organization, batch=100)

    assert (report.sent, report.failed, report.unavailable) == (250, 0, False)
    assert report.marked == 250 + 7 + 5 + 4
    assert unmetered_count(organization) == 0
    identifiers = {
        row_identifier(organization_id=organization.pk, request_id=r.request_id, attempt=1) for r in billable
    }
    assert set(fake_stripe.meter_events) == identifiers
    assert fake_units(fake_stripe, customer) == 250 * int(COST * UNITS_PER_USD)
    stream_posts = [r for r in fake_stripe.requests if r[1] == "/v2/billing/meter_event_stream"]
    assert len(stream_posts) == 3  # 100 + 100 + 50: batches of at most 100 events

    again = meters_push(organization=organization, batch=100)
    assert (again.sent, again.marked) == (0, 0)

    result = meters_reconcile(organization=organization, period=PERIOD)
    assert result.ledger_rows == 250
    assert result.ledger_units == result.sent_units == result.stripe_units == 250 * 12345
    assert result.difference == 0


def test_rows_settled_later_are_sent_by_a_later_push(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    organization, _ = two_tenants
    meter_create(fake_stripe)
    make_metered(organization, fake_stripe, version=metered_plan_version(), since=NOW - dt.timedelta(days=3))
    (in_flight,) = ledger_add(organization, 1, status=AttemptStatus.RESERVED)
    ledger_add(organization, 20)
    assert meters_push(organization=organization).sent == 20
    # The older row (lower id) settles after the push went past it: the next push still finds it.
    with organization_schema(organization):
        type(in_flight).objects.filter(pk=in_flight.pk).update(
            status=AttemptStatus.SUCCEEDED, cost_usd=COST, settled_at=NOW - dt.timedelta(minutes=4)
        )
    tenant_connection().set_schema_to_public()
    assert meters_push(organization=organization).sent == 1
    assert meters_reconcile(organization=organization, period=PERIOD).difference == 0


def test_a_resend_is_deduplicated_by_identifier(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    """Rows Stripe accepted but the push never marked (it died in between) are sent again; Stripe
    keeps one event per identifier, so nothing is billed twice."""
    organization, _ = two_tenants
    meter_create(fake_stripe)
    customer = make_metered(organization, fake_stripe, version=metered_plan_version(), since=NOW - dt.timedelta(days=3))
    ledger_add(organization, 120)
    assert meters_push(organization=organization).sent == 120
    with organization_schema(organization):
        from apps.llm.models import UsageAttempt

        UsageAttempt.objects.update(metered_at=None)  # as if the marking transaction never committed
    tenant_connection().set_schema_to_public()

    assert meters_push(organization=organization).sent == 120  # sent again...
    assert len(fake_stripe.meter_events) == 120  # ...and counted once
    assert fake_units(fake_stripe, customer) == 120 * 12345
    # One event sent twice on v1 as well: the second answer is the first event.
    event = stripe_gateway.MeterEvent(
        event_name="cognitionos_usage_test",
        customer_id=customer,
        value=5,
        identifier="dup-1",
        timestamp=int(NOW.timestamp()),
    )
    stripe_gateway.meter_event_create(event)
    stripe_gateway.meter_event_create(stripe_gateway.MeterEvent(**{**event.__dict__, "value": 7}))
    assert fake_stripe.meter_events["dup-1"]["payload"]["value"] == "5"
    result = meters_reconcile(organization=organization, period=PERIOD)
    assert result.stripe_units - 5 == result.ledger_units  # the test's own extra event, nothing else


def test_stripe_outage_delays_metering_and_loses_nothing(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    organization, _ = two_tenants
    meter_create(fake_stripe)
    make_metered(organization, fake_stripe, version=metered_plan_version(), since=NOW - dt.timedelta(days=3))
    ledger_add(organization, 300)

    # Stripe answers 500 to everything on the meter event API for a while (the SDK retries each
    # call twice, so each refused request takes three failures).
    fake_stripe.fail_next(9, status=500, path_prefix="/v2/billing")
    first = meters_push(organization=organization, batch=100)
    assert first.unavailable
    assert first.sent < 300
    assert unmetered_count(organization) == 300 - first.sent
    during = meters_reconcile(organization=organization, period=PERIOD)
    assert during.unsent_units == (300 - first.sent) * 12345
    assert during.stripe_difference == 0  # what was marked sent is what Stripe has
    # The organization backs off: the next beat's push doesn't hammer Stripe.
    assert meters_push(organization=organization).skipped == "backing off"

    _push_all(organization, batch=100)

    result = meters_reconcile(organization=organization, period=PERIOD)
    assert (result.ledger_units, result.difference) == (300 * 12345, 0)
    assert len(fake_stripe.meter_events) == 300
    assert meters_push(organization=organization).skipped == ""  # recovered: no backoff left


def test_an_event_stripe_refuses_is_retried_and_the_rest_go_through(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    organization, _ = two_tenants
    meter_create(fake_stripe)
    make_metered(organization, fake_stripe, version=metered_plan_version(), since=NOW - dt.timedelta(days=3))
    ledger_add(organization, 30)
    # The stream refuses the request (a 400): each event goes again on v1; one of those fails too.
    # (The fake's failures say Stripe-Should-Retry, so the SDK tries each request three times.)
    fake_stripe.fail_next(3, status=400, path_prefix="/v2/billing/meter_event_stream")
    fake_stripe.fail_next(3, status=400, path_prefix="/v1/billing/meter_events")
    report = meters_push(organization=organization)
    assert (report.sent, report.failed, report.unavailable) == (29, 1, False)
    assert unmetered_count(organization) == 1
    assert meters_push(organization=organization).sent == 1
    assert meters_reconcile(organization=organization, period=PERIOD).difference == 0


def test_two_organizations_each_metered_to_its_own_customer(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    first, second = two_tenants
    meter_create(fake_stripe)
    version = metered_plan_version()
    customer_a = make_metered(first, fake_stripe, version=version, since=NOW - dt.timedelta(days=3))
    customer_b = make_metered(second, fake_stripe, version=version, since=NOW - dt.timedelta(days=3))
    # The same request ids in both ledgers: the identifier carries the organization.
    ledger_add(first, 40, prefix="shared")
    ledger_add(second, 15, prefix="shared", cost=Decimal("0.00000001"))

    assert meters_push(organization=first).sent == 40
    assert meters_push(organization=second).sent == 15

    assert fake_units(fake_stripe, customer_a) == 40 * 12345
    assert fake_units(fake_stripe, customer_b) == 15
    for identifier, event in fake_stripe.meter_events.items():
        owner = first if event["payload"]["stripe_customer_id"] == customer_a else second
        assert identifier.startswith(f"{owner.pk}:")
    assert meters_reconcile(organization=first, period=PERIOD).difference == 0
    assert meters_reconcile(organization=second, period=PERIOD).stripe_units == 15
    assert set(metering_organization_ids()) >= {first.pk, second.pk}


def test_no_customer_or_no_metered_plan_sends_nothing(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    organization, other = two_tenants
    ledger_add(organization, 5)
    assert metering_target(organization=organization) is None  # on Free: no plan period bills usage
    assert meters_push(organization=organization).skipped == "no target"
    # A plan that bills usage but no Stripe customer: nothing to send to either.
    from apps.billing.models import OrganizationPlanPeriod

    OrganizationPlanPeriod.objects.filter(organization=other).delete()
    OrganizationPlanPeriod.objects.create(
        organization=other,
        plan_version=metered_plan_version(),
        starts_at=NOW - dt.timedelta(days=1),
        reason=OrganizationPlanPeriod.Reason.STRIPE,
    )
    assert meters_push(organization=other).skipped == "no target"
    assert fake_stripe.meter_events == {}


def test_reconcile_command_prints_the_difference(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe, capsys: pytest.CaptureFixture[str]
) -> None:
    organization, _ = two_tenants
    meter_create(fake_stripe)
    make_metered(organization, fake_stripe, version=metered_plan_version(), since=NOW - dt.timedelta(days=3))
    ledger_add(organization, 10)
    call_command("billing", "reconcile", "--tenant", organization.slug, "--period", PERIOD)
    before = _figures(capsys.readouterr().out)
    assert (before["not yet sent"], before["difference"]) == (123450, -123450)
    call_command("billing", "meter-push", "--tenant", organization.slug)
    capsys.readouterr()
    call_command("billing", "reconcile", "--tenant", organization.slug, "--period", PERIOD)
    after = _figures(capsys.readouterr().out)
    assert after == {
        "ledger (billable)": 123450,
        "sent to Stripe": 123450,
        "Stripe counts": 123450,
        "not yet sent": 0,
        "Stripe minus sent": 0,
        "difference": 0,
    }
    call_command("billing", "reconcile", "--tenant", organization.slug, "--period", PERIOD, "--json")
    assert json.loads(capsys.readouterr().out)["difference"] == 0


def _figures(output: str) -> dict[str, int]:
    """The reconcile command's lines `label: number ...` as a dict."""
    found = re.findall(r"^([A-Za-z ()]+):\s+(-?\d+)", output, flags=re.MULTILINE)
    return {label.strip(): int(number) for label, number in found}


def test_the_beat_pushes_only_metered_organizations(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.billing import tasks

    metered, free = two_tenants
    meter_create(fake_stripe)
    make_metered(metered, fake_stripe, version=metered_plan_version(), since=NOW - dt.timedelta(days=3))
    ledger_add(metered, 12)
    ledger_add(free, 9)
    queued: list[int] = []
    monkeypatch.setattr(tasks.billing_meters_push, "delay", lambda *, tenant_id: queued.append(tenant_id))

    assert tasks.billing_meters_push_all() == len(queued)
    assert metered.pk in queued
    assert free.pk not in queued

    done = tasks.billing_meters_push.apply(kwargs={"tenant_id": metered.pk}).get()
    assert (done["sent"], done["marked"], done["unavailable"]) == (12, 12, False)
    assert meters_reconcile(organization=metered, period=PERIOD).difference == 0
