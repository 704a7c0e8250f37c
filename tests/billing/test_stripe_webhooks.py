"""Stripe through the real stripe SDK and the fake Stripe server: Checkout, webhooks, the billing portal."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.principals import Principal
from apps.audit.models import AuditEvent
from apps.billing.models import OrganizationSubscription, SubscriptionStatus
from apps.billing.services import PlanChangeInvalid, billing_portal_session_create, checkout_session_create
from apps.billing.stripe_gateway import StripeUnavailable
from apps.billing.stripe_models import StripeCustomer, StripeEvent, StripeInvoice, StripeSubscription
from apps.billing.stripe_selectors import stripe_invoice_list
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from tests.billing.conftest import post_event, post_pending
from tests.support.fake_stripe import FakeStripe, sign_payload

pytestmark = pytest.mark.usefixtures("stripe_prices")

ACTOR = Principal.system("tests")
SUCCESS = "http://tenant-a.localhost/billing/?checkout=done"
CANCEL = "http://tenant-a.localhost/billing/"


def _refresh(organization: Organization) -> Organization:
    return Organization.objects.select_related("plan").get(pk=organization.pk)


def _audit(organization: Organization, action: str) -> list[AuditEvent]:
    with organization_schema(organization):
        return list(AuditEvent.objects.filter(action=action).order_by("id"))


def _subscribe(organization: Organization, fake: FakeStripe, plan: str = "pro") -> dict[str, Any]:
    """Checkout paid on the fake, every event delivered in order; the Stripe subscription."""
    from apps.billing.models import Plan

    url = checkout_session_create(
        organization=organization, plan=Plan.objects.get(code=plan), success_url=SUCCESS, cancel_url=CANCEL, actor=ACTOR
    )
    session_id = url.rsplit("/", 1)[-1]
    subscription = fake.complete_checkout(session_id)
    for response in post_pending(fake):
        assert response.status_code == 200, response.content
    return subscription


def test_checkout_then_webhooks_put_the_organization_on_the_plan(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    org, _ = two_tenants
    assert _refresh(org).plan.code != "pro"

    from apps.billing.models import Plan

    url = checkout_session_create(
        organization=org, plan=Plan.objects.get(code="pro"), success_url=SUCCESS, cancel_url=CANCEL, actor=ACTOR
    )
    assert url.startswith(fake_stripe.api_base + "/c/pay/cs_test_")
    customer = StripeCustomer.objects.get(organization=org)
    assert fake_stripe.get("customer", customer.customer_id)["metadata"]["organization_id"] == str(org.pk)
    assert _refresh(org).plan.code != "pro", "nothing changes before Stripe says it is paid"

    subscription = fake_stripe.complete_checkout(url.rsplit("/", 1)[-1])
    types = [event["type"] for event in fake_stripe.pending]
    assert types == [
        "customer.subscription.created",
        "invoice.finalized",
        "invoice.paid",
        "checkout.session.completed",
    ]
    responses = post_pending(fake_stripe)
    assert [r.status_code for r in responses] == [200, 200, 200, 200]

    org = _refresh(org)
    assert org.plan.code == "pro"
    assert org.status == Organization.Status.ACTIVE
    state = OrganizationSubscription.objects.get(organization=org)
    assert state.status == SubscriptionStatus.ACTIVE
    assert state.stripe_subscription_id == subscription["id"]
    assert state.current_period_end is not None and state.current_period_start is not None
    invoices = stripe_invoice_list(org)
    assert [(i.status, i.amount_paid) for i in invoices] == [("paid", 2000)]
    assert len(_audit(org, "billing.plan_changed")) == 1
    assert len(_audit(org, "billing.checkout_started")) == 1
    assert len(_audit(org, "billing.stripe_event")) == 4
    # dj-stripe's mirror: the organization is the customer's subscriber; the subscription and invoice are there.
    from djstripe.models import Customer, Invoice, Subscription

    assert Customer.objects.get(id=customer.customer_id).subscriber == org
    assert Subscription.objects.get(id=subscription["id"]).status == "active"
    assert Invoice.objects.filter(customer_id=customer.customer_id).count() == 1


def test_a_duplicated_event_changes_nothing_twice(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    org, _ = two_tenants
    _subscribe(org, fake_stripe)
    created = fake_stripe.events_of("customer.subscription.created")[0]
    before = (len(_audit(org, "billing.plan_changed")), len(_audit(org, "billing.stripe_event")))

    again = post_event(created, fake_stripe)
    assert again.status_code == 200
    assert again.json()["outcome"] == "duplicate"
    assert (len(_audit(org, "billing.plan_changed")), len(_audit(org, "billing.stripe_event"))) == before
    assert StripeEvent.objects.filter(event_id=created["id"]).count() == 1


def test_an_older_subscription_update_arriving_after_a_newer_one_is_ignored(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    org, _ = two_tenants
    subscription = _subscribe(org, fake_stripe)
    fake_stripe.clock_offset = 10
    fake_stripe.subscription_update(subscription["id"], cancel_at_period_end=True)
    fake_stripe.clock_offset = 20
    fake_stripe.subscription_update(subscription["id"], cancel_at_period_end=False)
    older, newer = fake_stripe.pending
    fake_stripe.pending = []

    assert post_event(newer, fake_stripe).json()["outcome"] == "applied"
    assert post_event(older, fake_stripe).json()["outcome"] == "stale"
    state = OrganizationSubscription.objects.get(organization=org)
    assert state.cancel_at_period_end is False
    assert StripeSubscription.objects.get(subscription_id=subscription["id"]).cancel_at_period_end is False


def test_events_reordered_end_to_start_give_the_same_state(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    """Checkout's events delivered last first: checkout.session.completed reads the subscription from Stripe."""
    from apps.billing.models import Plan

    org, _ = two_tenants
    url = checkout_session_create(
        organization=org, plan=Plan.objects.get(code="pro"), success_url=SUCCESS, cancel_url=CANCEL, actor=ACTOR
    )
    fake_stripe.complete_checkout(url.rsplit("/", 1)[-1])
    responses = post_pending(fake_stripe, order="reversed")
    assert [r.status_code for r in responses] == [200, 200, 200, 200]
    org = _refresh(org)
    assert org.plan.code == "pro"
    assert OrganizationSubscription.objects.get(organization=org).status == SubscriptionStatus.ACTIVE
    assert len(_audit(org, "billing.plan_changed")) == 1
    assert StripeInvoice.objects.get(organization=org).status == "paid"


def test_a_delayed_cancellation_still_ends_the_plan_and_a_late_update_does_not_revive_it(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    org, _ = two_tenants
    subscription = _subscribe(org, fake_stripe)
    fake_stripe.clock_offset = 10
    fake_stripe.subscription_update(subscription["id"], cancel_at_period_end=True)
    fake_stripe.clock_offset = 20
    fake_stripe.subscription_end(subscription["id"])
    update, deleted = fake_stripe.pending
    fake_stripe.pending = []

    assert post_event(deleted, fake_stripe).json()["outcome"] == "applied"
    org = _refresh(org)
    assert org.plan.code == "free"
    assert OrganizationSubscription.objects.get(organization=org).status == SubscriptionStatus.CANCELED
    # The update of before the cancellation, delivered late: nothing moves back.
    assert post_event(update, fake_stripe).json()["outcome"] == "stale"
    assert _refresh(org).plan.code == "free"


def test_a_failed_payment_makes_the_organization_past_due_until_paid(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    org, _ = two_tenants
    subscription = _subscribe(org, fake_stripe)
    fake_stripe.clock_offset = 10
    fake_stripe.invoice_payment_fail(subscription["id"])
    assert [r.status_code for r in post_pending(fake_stripe)] == [200, 200, 200]
    org = _refresh(org)
    assert org.status == Organization.Status.PAST_DUE
    assert org.plan.code == "pro", "the plan stays during the grace period"
    state = OrganizationSubscription.objects.get(organization=org)
    assert state.status == SubscriptionStatus.PAST_DUE
    assert state.past_due_since is not None
    assert len(_audit(org, "organization.status_changed")) == 1

    fake_stripe.clock_offset = 20
    fake_stripe.invoice_pay(subscription["id"])
    post_pending(fake_stripe)
    org = _refresh(org)
    assert org.status == Organization.Status.ACTIVE
    state = OrganizationSubscription.objects.get(organization=org)
    assert state.status == SubscriptionStatus.ACTIVE
    assert state.past_due_since is None
    assert [i.status for i in stripe_invoice_list(org)].count("paid") == 2


def test_a_payment_failure_delivered_after_the_later_payment_changes_nothing(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    org, _ = two_tenants
    subscription = _subscribe(org, fake_stripe)
    fake_stripe.clock_offset = 10
    fake_stripe.invoice_payment_fail(subscription["id"])
    failed = list(fake_stripe.pending)
    fake_stripe.pending = []
    fake_stripe.clock_offset = 20
    fake_stripe.invoice_pay(subscription["id"])
    for event in fake_stripe.pending:
        post_event(event, fake_stripe)
    fake_stripe.pending = []
    for event in failed:
        assert post_event(event, fake_stripe).status_code == 200
    org = _refresh(org)
    assert org.status == Organization.Status.ACTIVE
    assert OrganizationSubscription.objects.get(organization=org).status == SubscriptionStatus.ACTIVE


@pytest.mark.parametrize(
    "signature",
    [
        "",  # no header
        "t=1,v1=00",  # malformed / stale
        "wrong-secret",
        "old-timestamp",
        "tampered-body",
    ],
)
def test_unsigned_or_badly_signed_events_are_refused_and_change_nothing(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe, signature: str
) -> None:
    org, _ = two_tenants
    from apps.billing.models import Plan

    url = checkout_session_create(
        organization=org, plan=Plan.objects.get(code="pro"), success_url=SUCCESS, cancel_url=CANCEL, actor=ACTOR
    )
    fake_stripe.complete_checkout(url.rsplit("/", 1)[-1])
    event = fake_stripe.pending[0]
    payload, _ = fake_stripe.event_signed(event)
    body = None
    if signature == "wrong-secret":
        signature = sign_payload(payload, "whsec_someone_else", fake_stripe.now())
    elif signature == "old-timestamp":
        signature = sign_payload(payload, fake_stripe.webhook_secret, fake_stripe.now() - 3600)
    elif signature == "tampered-body":
        signature = sign_payload(payload, fake_stripe.webhook_secret, fake_stripe.now())
        body = payload.replace(b'"active"', b'"canceled"')
        assert body != payload
    response = post_event(event, fake_stripe, signature=signature, body=body)
    assert response.status_code == 400
    assert not StripeEvent.objects.exists()
    assert not StripeSubscription.objects.exists()
    assert _refresh(org).plan.code != "pro"


def test_one_organizations_events_never_touch_another(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    org_a, org_b = two_tenants
    plan_b = _refresh(org_b).plan.code
    subscription = _subscribe(org_a, fake_stripe)
    assert _refresh(org_a).plan.code == "pro"
    org_b = _refresh(org_b)
    assert org_b.plan.code == plan_b
    assert not OrganizationSubscription.objects.filter(organization=org_b).exclude(status="none").exists()
    assert not _audit(org_b, "billing.stripe_event")

    # An event naming A's customer but B in its Checkout reference (or metadata) changes nothing of B.
    completed = fake_stripe.events_of("checkout.session.completed")[0]
    forged = {**completed, "id": "evt_forged_1"}
    forged["data"] = {
        "object": {
            **completed["data"]["object"],
            "client_reference_id": str(org_b.pk),
            "metadata": {"organization_id": str(org_b.pk)},
        }
    }
    assert post_event(forged, fake_stripe).json()["outcome"] == "ignored"
    # A subscription event of A's customer with B's id in metadata: applied to A only.
    fake_stripe.clock_offset = 10
    fake_stripe.subscription_update(subscription["id"], metadata={"organization_id": str(org_b.pk)})
    assert [r.json()["outcome"] for r in post_pending(fake_stripe)] == ["applied"]
    assert _refresh(org_b).plan.code == plan_b
    assert not _audit(org_b, "billing.stripe_event")

    # A customer we never created (another platform's, or a stale one): ignored, nobody changes.
    stranger = {**fake_stripe.events_of("customer.subscription.created")[0], "id": "evt_stranger"}
    stranger["data"] = {"object": {**stranger["data"]["object"], "customer": "cus_unknown", "id": "sub_unknown"}}
    assert post_event(stranger, fake_stripe).json()["outcome"] == "ignored"
    assert not StripeSubscription.objects.filter(subscription_id="sub_unknown").exists()


def test_checkout_retries_a_stripe_5xx_and_creates_one_session(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    from apps.billing.models import Plan

    org, _ = two_tenants
    fake_stripe.fail_next(1, status=500, path_prefix="/v1/customers")
    fake_stripe.fail_next(1, status=503, path_prefix="/v1/checkout/sessions")
    url = checkout_session_create(
        organization=org, plan=Plan.objects.get(code="pro"), success_url=SUCCESS, cancel_url=CANCEL, actor=ACTOR
    )
    assert url.startswith(fake_stripe.api_base)
    statuses = [(path, status) for method, path, status in fake_stripe.requests if method == "POST"]
    assert statuses == [
        ("/v1/customers", 500),
        ("/v1/customers", 200),
        ("/v1/checkout/sessions", 503),
        ("/v1/checkout/sessions", 200),
    ]
    assert len(fake_stripe.all("customer")) == 1
    assert len(fake_stripe.all("checkout.session")) == 1


def test_a_stripe_outage_is_reported_and_nothing_is_half_written(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    from apps.billing.models import Plan

    org, _ = two_tenants
    fake_stripe.fail_next(10, status=500)
    with pytest.raises(StripeUnavailable):
        checkout_session_create(
            organization=org, plan=Plan.objects.get(code="pro"), success_url=SUCCESS, cancel_url=CANCEL, actor=ACTOR
        )
    assert not StripeCustomer.objects.filter(organization=org).exists()
    assert not _audit(org, "billing.checkout_started")


def test_checkout_refuses_a_plan_without_a_price_and_a_second_subscription(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    from apps.billing.models import Plan

    org, _ = two_tenants
    with pytest.raises(PlanChangeInvalid):
        checkout_session_create(
            organization=org, plan=Plan.objects.get(code="free"), success_url=SUCCESS, cancel_url=CANCEL, actor=ACTOR
        )
    _subscribe(org, fake_stripe)
    with pytest.raises(PlanChangeInvalid, match="billing portal"):
        checkout_session_create(
            organization=org,
            plan=Plan.objects.get(code="enterprise"),
            success_url=SUCCESS,
            cancel_url=CANCEL,
            actor=ACTOR,
        )


def test_the_billing_portal_reuses_the_customer_and_its_cancellation_reaches_the_organization(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    import urllib.request

    org, _ = two_tenants
    subscription = _subscribe(org, fake_stripe)
    url = billing_portal_session_create(organization=org, return_url=CANCEL, actor=ACTOR)
    assert url.startswith(fake_stripe.api_base + "/p/session/bps_")
    assert len(fake_stripe.all("customer")) == 1
    assert len(_audit(org, "billing.portal_opened")) == 1
    # The member cancels on the (fake) portal page: cancellation at the period's end.
    fake_stripe.clock_offset = 10
    request = urllib.request.Request(url, data=b"action=cancel", method="POST")  # noqa: S310 - the fake's http URL

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as answer:
        opener.open(request)
    assert answer.value.code == 303
    post_pending(fake_stripe)
    state = OrganizationSubscription.objects.get(organization=org)
    assert state.cancel_at_period_end is True
    assert state.status == SubscriptionStatus.ACTIVE
    assert _refresh(org).plan.code == "pro", "the plan lasts until the period ends"
    assert fake_stripe.get("subscription", subscription["id"])["cancel_at_period_end"] is True


def test_a_stripe_outage_while_applying_answers_503_and_the_redelivery_applies_it(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    """Two updates in one second can't be ordered by time: the subscription is read from Stripe.
    When Stripe can't answer, nothing is recorded and Stripe's retry of the delivery applies it."""
    org, _ = two_tenants
    subscription = _subscribe(org, fake_stripe)
    fake_stripe.clock_offset = 10
    fake_stripe.subscription_update(subscription["id"], cancel_at_period_end=True)
    fake_stripe.subscription_update(subscription["id"], cancel_at_period_end=False)
    first, second = fake_stripe.pending
    fake_stripe.pending = []
    assert post_event(first, fake_stripe).json()["outcome"] == "applied"

    fake_stripe.fail_next(3, status=500, path_prefix="/v1/subscriptions")  # more than the retries
    response = post_event(second, fake_stripe)
    assert response.status_code == 503
    assert not StripeEvent.objects.filter(event_id=second["id"]).exists()

    retried = post_event(second, fake_stripe)
    assert retried.status_code == 200
    assert retried.json()["outcome"] == "applied"
    # Stripe's state (the later update) is what applies, whichever of the two came last.
    assert OrganizationSubscription.objects.get(organization=org).cancel_at_period_end is False


def test_stripe_is_read_with_no_transaction_open_and_no_lock_held(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    """Reading a subscription from Stripe (two updates in one second) happens between attempts,
    not inside the transaction that locks the organization: a slow Stripe holds no lock."""
    from django.db import connection

    org, _ = two_tenants
    subscription = _subscribe(org, fake_stripe)
    fake_stripe.clock_offset = 10
    fake_stripe.subscription_update(subscription["id"], cancel_at_period_end=True)
    fake_stripe.subscription_update(subscription["id"], cancel_at_period_end=False)
    first, second = fake_stripe.pending
    fake_stripe.pending = []
    assert post_event(first, fake_stripe).json()["outcome"] == "applied"

    # The test runs inside one transaction; anything deeper is the webhook's own.
    baseline = len(connection.savepoint_ids)
    depths: list[tuple[str, int]] = []
    fake_stripe.on_request = lambda method, path: depths.append((path, len(connection.savepoint_ids)))
    assert post_event(second, fake_stripe).json()["outcome"] == "applied"
    fake_stripe.on_request = None
    reads = [depth for path, depth in depths if path == f"/v1/subscriptions/{subscription['id']}"]
    assert reads and reads == [baseline] * len(reads), depths
    assert OrganizationSubscription.objects.get(organization=org).cancel_at_period_end is False


def test_the_endpoint_refuses_what_is_not_a_signed_stripe_event(
    two_tenants: tuple[Organization, Organization], fake_stripe: FakeStripe
) -> None:
    from django.test import Client

    client = Client(HTTP_HOST="localhost")
    assert client.get("/billing/stripe/webhook/").status_code == 405
    # Validly signed, but not an event: refused, nothing recorded.
    not_event = {"id": "x", "object": "customer"}
    assert post_event(not_event, fake_stripe).status_code == 400
    huge = {"id": "evt_huge", "object": "event", "data": {"object": {"pad": "x" * 600_000}}}
    assert post_event(huge, fake_stripe).status_code == 413
    # A signed event of a type we don't use: accepted (Stripe stops retrying) and recorded as ignored.
    other = {
        "id": "evt_other",
        "object": "event",
        "type": "charge.refunded",
        "created": fake_stripe.now(),
        "data": {"object": {"id": "ch_1", "object": "charge", "customer": None}},
    }
    response = post_event(other, fake_stripe)
    assert response.status_code == 200
    assert response.json()["outcome"] == "ignored"
    assert StripeEvent.objects.get(event_id="evt_other").outcome == "ignored"
