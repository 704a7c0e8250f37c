"""The portal's Plan and billing page: who may open it, what it shows (the plan, the period's usage
from the public daily rollups, the projection, credits, invoices, the plans to move to), one
organization's numbers never on another's page; and the operators' tools in the admin (credits,
complimentary plans, trials and their extensions, manual overrides), each in the organization's
audit log."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.billing.models import BillingCredit, Plan, PlanGrant, PlanVersion
from apps.billing.operator_services import (
    OperatorRefused,
    credit_apply,
    credit_grant,
    plan_grant,
    plan_grant_extend,
    plan_grants_expire,
)
from apps.billing.selectors import applied_plan, entitlement_cache_forget
from apps.billing.usage_selectors import BillingPeriod, calendar_month, credit_balance_usd, period_usage
from apps.llm.platform.models import UsageBucket, UsageRollup, UsageSpan
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from tests.factories import member_make, operator_admin_client
from tests.portal.conftest import ClientFor
from tests.support.fake_stripe import FakeStripe

PASSWORD = "a-long-operator-password-1"


def signed_in(client_for: ClientFor, organization: Organization, role: str) -> Client:
    client = client_for(f"{organization.slug}.localhost")
    client.force_login(member_make(organization=organization, role=role))
    return client


def rollup(
    organization: Organization, day: dt.date, cost: str, *, model: str = "gpt-4o-mini", requests: int = 1
) -> None:
    UsageRollup.objects.create(
        organization=organization,
        day=day,
        model_name=model,
        requests=requests,
        input_tokens=100 * requests,
        output_tokens=20 * requests,
        cost_usd=Decimal(cost),
    )


def on_sale(price_id: str = "price_pro_test") -> None:
    """Pro can be bought online (Checkout needs its Stripe price); in this test's transaction only."""
    PlanVersion.objects.filter(plan__code="pro").update(stripe_price_id=price_id)


def events(organization: Organization, action: str) -> list[AuditEvent]:
    with organization_schema(organization):
        return list(AuditEvent.objects.filter(action=action).order_by("id"))


def operator(email: str = "ops@billing.test") -> User:
    return User.objects.create_superuser(email=email, password=PASSWORD)


def operator_client(user: User) -> Client:
    return operator_admin_client(user)


@pytest.mark.parametrize(
    ("role", "status"), [("owner", 200), ("admin", 200), ("billing", 200), ("developer", 403), ("viewer", 403)]
)
def test_each_role_opens_the_page_only_with_billing_manage(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, role: str, status: int
) -> None:
    on_sale()
    client = signed_in(client_for, two_tenants[0], role)
    page = client.get("/billing/")
    assert page.status_code == status
    if status == 403:
        upgrade = client.post("/billing/upgrade/", {"plan": "pro"})
        manage = client.post("/billing/manage/")
        assert upgrade.status_code == 403 and manage.status_code == 403
        assert "Plan and billing" not in client.get("/").content.decode()
    else:
        html = page.content.decode()
        # The suite's organizations are on the tests' "Suite" plan (tests.factories), free of charge.
        assert "<h1>Plan and billing</h1>" in html and "Current plan: Suite" in html
        assert '<button type="submit" class="button button--primary">Upgrade to Pro</button>' in html


def test_the_page_shows_this_periods_usage_from_the_rollups_and_only_this_organizations(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    org_a, org_b = two_tenants
    today = timezone.now().date()
    first = today.replace(day=1)
    rollup(org_a, first, "0.25", requests=3)
    rollup(org_a, today, "0.50", model="claude-haiku-4-5", requests=2)
    rollup(org_a, first - dt.timedelta(days=1), "7.00")  # last month: not this period
    rollup(org_b, today, "3.33", requests=9)  # another organization
    html = signed_in(client_for, org_a, "billing").get("/billing/").content.decode()
    assert "$0.75" in html and "$7.00" not in html.replace("$7.00 a month", "") and "$3.33" not in html
    assert "of $1.00 included" in html or "included (" in html
    other = signed_in(client_for, org_b, "owner").get("/billing/").content.decode()
    assert "$3.33" in other and "$0.75" not in other


def test_the_page_shows_a_plan_change_made_by_another_process_at_once(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, settings: object
) -> None:
    org_a, org_b = two_tenants
    settings.TENANT_RESOLUTION_CACHE_SECONDS = 600  # type: ignore[attr-defined]  # this process remembers Suite
    client = signed_in(client_for, org_a, "owner")
    assert "Current plan: Suite" in client.get("/billing/").content.decode()
    # Another process handled Stripe's webhook: the row changed, this process's caches were not told.
    Organization.objects.filter(pk=org_a.pk).update(plan=Plan.objects.get(code="pro"))
    assert "Current plan: Pro" in client.get("/billing/").content.decode()
    assert "Current plan: Suite" in signed_in(client_for, org_b, "owner").get("/billing/").content.decode()


def test_period_usage_adds_up_the_rollups_and_projects_linearly(two_tenants: tuple[Organization, Organization]) -> None:
    org_a, org_b = two_tenants
    period = BillingPeriod(dt.datetime(2026, 4, 1, tzinfo=dt.UTC), dt.datetime(2026, 5, 1, tzinfo=dt.UTC))
    rollup(org_a, dt.date(2026, 4, 1), "1.50", requests=2)
    rollup(org_a, dt.date(2026, 4, 1), "0.50", model="other")
    rollup(org_a, dt.date(2026, 4, 10), "4.00", requests=5)
    rollup(org_a, dt.date(2026, 5, 1), "100.00")  # the next period
    rollup(org_b, dt.date(2026, 4, 2), "9.00")
    now = dt.datetime(2026, 4, 16, tzinfo=dt.UTC)  # half the period (15 of 30 days)
    usage = period_usage(organization=org_a, period=period, included_usd=Decimal("5.00"), now=now)
    assert len(usage.days) == 30 and usage.days[0].cost_usd == Decimal("2.00")
    assert usage.used_usd == Decimal("6.00") and usage.requests == 8
    assert usage.over_included_usd == Decimal("1.00") and usage.used_percent == 100
    assert usage.projected_usd == Decimal("12.00")  # 6.00 / 0.5
    assert usage.projected_over_usd == Decimal("7.00")
    early = period_usage(
        organization=org_a, period=period, included_usd=Decimal(5), now=period.start + dt.timedelta(hours=1)
    )
    assert early.projected_usd is None  # too early to say
    assert calendar_month(dt.datetime(2026, 12, 31, 23, tzinfo=dt.UTC)).end == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def test_upgrade_and_manage_billing_go_to_stripe_and_a_stripe_outage_changes_nothing(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    org_a, _ = two_tenants
    with (
        FakeStripe() as fake,
        override_settings(
            STRIPE_SECRET_KEY="sk_test_portal", STRIPE_API_BASE=fake.api_base, STRIPE_MAX_NETWORK_RETRIES=0
        ),
    ):
        on_sale(fake.price_create("price_pro_portal"))
        client = signed_in(client_for, org_a, "billing")
        html = client.get("/billing/").content.decode()
        assert "Manage billing" not in html  # no Stripe customer yet
        fake.fail_next(1, status=500)
        down = client.post("/billing/upgrade/", {"plan": "pro"}, follow=True)
        assert "Payments can&#x27;t be reached right now" in down.content.decode()
        assert events(org_a, "billing.checkout_started") == []
        started = client.post("/billing/upgrade/", {"plan": "pro"})
        assert started.status_code == 302 and started["Location"].startswith(fake.api_base + "/c/pay/")
        assert events(org_a, "billing.checkout_started")[0].metadata["plan"] == "pro"
        html = client.get("/billing/").content.decode()
        assert '<button type="submit" class="button button--secondary">Manage billing</button>' in html
        portal = client.post("/billing/manage/")
        assert portal.status_code == 302 and portal["Location"].startswith(fake.api_base + "/p/session/")
        assert len(events(org_a, "billing.portal_opened")) == 1


def test_a_period_starting_inside_a_day_counts_that_day_from_its_hour(
    two_tenants: tuple[Organization, Organization],
) -> None:
    """A subscription bought at 14:20 starts its period then: the morning's usage (on the plan
    before) is not counted against the new plan's included usage."""
    org_a, org_b = two_tenants
    start = dt.datetime(2026, 4, 3, 14, 20, tzinfo=dt.UTC)
    period = BillingPeriod(start, dt.datetime(2026, 5, 3, 14, 20, tzinfo=dt.UTC))
    rollup(org_a, dt.date(2026, 4, 3), "9.00", requests=9)  # the whole first day: not read
    for hour, cost, organization in ((9, "8.00", org_a), (14, "0.50", org_a), (20, "0.25", org_a), (15, "3", org_b)):
        UsageBucket.objects.create(
            organization=organization,
            span=UsageSpan.HOUR_TOTAL,
            start=dt.datetime(2026, 4, 3, hour, tzinfo=dt.UTC),
            requests=1,
            cost_usd=Decimal(cost),
        )
    rollup(org_a, dt.date(2026, 4, 4), "1.00", requests=2)  # a whole day
    rollup(org_a, dt.date(2026, 5, 3), "5.00")  # the last day: read from its hours (none before 14:20)
    usage = period_usage(
        organization=org_a, period=period, included_usd=Decimal(50), now=dt.datetime(2026, 4, 5, tzinfo=dt.UTC)
    )
    assert usage.days[0].day == dt.date(2026, 4, 3) and usage.days[0].cost_usd == Decimal("0.75")
    assert usage.days[0].requests == 2 and usage.days[-1].day == dt.date(2026, 5, 3)
    assert usage.used_usd == Decimal("1.75") and usage.requests == 4


def test_an_upgrade_to_a_plan_not_offered_is_refused_with_400(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    client = signed_in(client_for, two_tenants[0], "owner")
    for plan in ("free", "no-such-plan", "enterprise<script>"):
        refused = client.post("/billing/upgrade/", {"plan": plan})
        assert refused.status_code == 400
        assert (
            "can&#x27;t be chosen here" in refused.content.decode()
            or "can't be chosen here" in refused.content.decode()
        )


def test_an_operator_credit_is_audited_bounded_and_applied_against_overage(
    two_tenants: tuple[Organization, Organization],
) -> None:
    org_a, org_b = two_tenants
    ops = operator()
    credit = credit_grant(organization=org_a, amount_usd="25", reason="Sorry for the outage", operator=ops)
    assert credit.amount_usd == Decimal("25.00") and credit_balance_usd(organization=org_a) == Decimal("25.00")
    assert credit_balance_usd(organization=org_b) == 0
    [event] = events(org_a, "billing.credit_granted")
    assert event.actor_kind == "operator" and event.actor_label == ops.email
    assert event.metadata["amount_usd"] == "25.00" and event.metadata["reason"] == "Sorry for the outage"
    assert events(org_b, "billing.credit_granted") == []
    for amount in ("0", "-5", "1e9", "abc"):
        with pytest.raises(OperatorRefused):
            credit_grant(organization=org_a, amount_usd=amount, reason="x", operator=ops)
    with pytest.raises(OperatorRefused):
        credit_grant(organization=org_a, amount_usd="5", reason="   ", operator=ops)
    not_staff = User.objects.create_user(email="member@billing.test", password=PASSWORD)
    with pytest.raises(OperatorRefused):
        credit_grant(organization=org_a, amount_usd="5", reason="x", operator=not_staff)
    assert BillingCredit.objects.filter(organization=org_a).count() == 1

    assert credit_apply(organization=org_a, charge_usd=Decimal("10.00"), reference="in_1") == Decimal("10.00")
    assert credit_apply(organization=org_a, charge_usd=Decimal("40.00"), reference="in_2") == Decimal("15.00")
    assert credit_balance_usd(organization=org_a) == 0
    assert [e.metadata["covered_usd"] for e in events(org_a, "billing.credit_applied")] == ["10.00", "15.00"]


def test_a_comp_plan_moves_the_organization_and_ends_back_on_free_audited(
    two_tenants: tuple[Organization, Organization],
) -> None:
    org_a, org_b = two_tenants
    ops = operator()
    pro = Plan.objects.get(code="pro")
    ends = timezone.now() + dt.timedelta(days=30)
    grant = plan_grant(organization=org_a, plan=pro, kind="comp", reason="Design partner", operator=ops, ends_at=ends)
    org_a.refresh_from_db()
    entitlement_cache_forget(org_a)
    assert org_a.plan.code == "pro" and applied_plan(org_a).plan_code == "pro"
    assert Organization.objects.get(pk=org_b.pk).plan.code == "suite"
    [granted] = events(org_a, "billing.plan_granted")
    assert granted.actor_label == ops.email and granted.metadata["kind"] == "comp" and granted.metadata["plan"] == "pro"
    assert granted.metadata["from_plan"] == "suite"

    with pytest.raises(OperatorRefused):  # a comp plan needs an end
        plan_grant(organization=org_a, plan=pro, kind="comp", reason="x", operator=ops)
    with pytest.raises(OperatorRefused):  # not in the past
        plan_grant_extend(grant=grant, ends_at=timezone.now() - dt.timedelta(days=1), reason="x", operator=ops)
    with pytest.raises(OperatorRefused):  # an extension is later
        plan_grant_extend(grant=grant, ends_at=ends - dt.timedelta(days=1), reason="x", operator=ops)
    plan_grant_extend(grant=grant, ends_at=ends + dt.timedelta(days=14), reason="Trial extended", operator=ops)
    [extended] = events(org_a, "billing.plan_grant_extended")
    assert extended.metadata["to"] == (ends + dt.timedelta(days=14)).isoformat()

    assert plan_grants_expire(now=ends) == 0  # extended past this
    assert plan_grants_expire(now=ends + dt.timedelta(days=15)) == 1
    org_a.refresh_from_db()
    assert org_a.plan.code == "free"
    [ended] = events(org_a, "billing.plan_grant_ended")
    assert ended.actor_kind == "system" and ended.metadata["to_plan"] == "free"
    assert PlanGrant.objects.get(pk=grant.pk).ended_at is not None


def test_operators_grant_extend_and_end_from_the_admin(two_tenants: tuple[Organization, Organization]) -> None:
    org_a, _ = two_tenants
    ops = operator()
    client = operator_client(ops)
    assert client.get("/admin/billing/plangrant/add/").status_code == 200
    ends = timezone.now() + dt.timedelta(days=14)
    bad = client.post(
        "/admin/billing/plangrant/add/",
        {
            "organization": org_a.pk,
            "plan": Plan.objects.get(code="pro").pk,
            "kind": "trial",
            "reason": "",
            "ends_at_0": "",
            "ends_at_1": "",
        },
    )
    assert bad.status_code == 200 and PlanGrant.objects.count() == 0  # the form again, with its errors
    added = client.post(
        "/admin/billing/plangrant/add/",
        {
            "organization": org_a.pk,
            "plan": Plan.objects.get(code="pro").pk,
            "kind": "trial",
            "reason": "Evaluation",
            "ends_at_0": ends.strftime("%Y-%m-%d"),
            "ends_at_1": ends.strftime("%H:%M:%S"),
        },
    )
    assert added.status_code == 302, added.content.decode()[:2000]
    grant = PlanGrant.objects.get()
    assert grant.granted_by == ops.email and Organization.objects.get(pk=org_a.pk).plan.code == "pro"
    later = ends + dt.timedelta(days=7)
    extended = client.post(
        "/admin/billing/plangrant/",
        {
            "action": "extend_grants",
            "_selected_action": [str(grant.pk)],
            "apply": "1",
            "reason": "More time",
            "ends_at_0": later.strftime("%Y-%m-%d"),
            "ends_at_1": later.strftime("%H:%M:%S"),
        },
    )
    assert extended.status_code == 302
    grant.refresh_from_db()
    assert grant.ends_at is not None and grant.ends_at > ends
    client.post("/admin/billing/plangrant/", {"action": "end_grants", "_selected_action": [str(grant.pk)]})
    assert Organization.objects.get(pk=org_a.pk).plan.code == "free"
    actions = [
        e.action
        for e in events(org_a, "billing.plan_granted")
        + events(org_a, "billing.plan_grant_extended")
        + events(org_a, "billing.plan_grant_ended")
    ]
    assert actions == ["billing.plan_granted", "billing.plan_grant_extended", "billing.plan_grant_ended"]

    credited = client.post(
        "/admin/billing/billingcredit/add/", {"organization": org_a.pk, "amount_usd": "12.50", "reason": "Goodwill"}
    )
    assert credited.status_code == 302
    assert events(org_a, "billing.credit_granted")[0].actor_label == ops.email
    refused = client.post(
        "/admin/billing/billingcredit/add/", {"organization": org_a.pk, "amount_usd": "0", "reason": "Goodwill"}
    )
    assert refused.status_code == 200 and BillingCredit.objects.count() == 1


def test_the_page_shows_credits_and_the_overage_of_a_paid_plan(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    org_a, _ = two_tenants
    ops = operator()
    plan_grant(organization=org_a, plan=Plan.objects.get(code="pro"), kind="override", reason="Contract", operator=ops)
    credit_grant(organization=org_a, amount_usd="40", reason="Goodwill", operator=ops)
    entitlement_cache_forget(org_a)
    html = signed_in(client_for, org_a, "owner").get("/billing/").content.decode()
    assert "Current plan: Pro" in html and "Credits" in html and "$40.00" in html
    assert "How the projection is made" in html


def test_plan_refusals_link_to_the_plan_page_only_for_members_who_may_open_it(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    owner = signed_in(client_for, organization, "owner").get("/playground/").content.decode()
    developer = signed_in(client_for, organization, "developer").get("/playground/").content.decode()
    assert 'id="refusal" role="alert" data-plans-url="/billing/"' in owner
    assert 'id="refusal" role="alert" data-plans-url=""' in developer


def _limits(html: str, plan_name: str) -> dict[str, str]:
    """The current plan's limits as the page lists them, label -> value."""
    listed = html.split(f'aria-label="What {plan_name} includes">')[1].split("</dl>", maxsplit=1)[0]
    return dict(re.findall(r"<dt>([^<]*)</dt><dd>([^<]*)</dd>", listed))


def test_the_plan_page_lists_the_knowledge_limits_of_each_organizations_plan(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    org_a, org_b = two_tenants
    plan_grant(
        organization=org_a, plan=Plan.objects.get(code="pro"), kind="override", reason="Contract", operator=operator()
    )
    entitlement_cache_forget(org_a)
    PlanVersion.objects.filter(plan__code="suite").update(max_document_bytes=None, max_knowledge_chunks=1234)
    entitlement_cache_forget()
    html_a = signed_in(client_for, org_a, "owner").get("/billing/").content.decode()
    limits_a = _limits(html_a, "Pro")  # billing migration 0007: 25 MB and 500,000 chunks
    assert limits_a["Knowledge document size"] == "25.0\xa0MB at most"
    assert limits_a["Knowledge chunks stored"] == "500,000 chunks"
    # The plans to move to list them too: Enterprise stores chunks without a limit.
    enterprise = html_a.split('id="offer-enterprise"')[1].split("</dl>", maxsplit=1)[0]
    assert "<dt>Knowledge chunks stored</dt><dd>Unlimited</dd>" in enterprise
    assert "<dt>Knowledge document size</dt><dd>50.0\xa0MB at most</dd>" in enterprise
    # B's page shows B's plan: an empty size is the platform's 50 MB.
    limits_b = _limits(signed_in(client_for, org_b, "owner").get("/billing/").content.decode(), "Suite")
    assert limits_b["Knowledge document size"] == "50.0\xa0MB at most"
    assert limits_b["Knowledge chunks stored"] == "1,234 chunks"
    entitlement_cache_forget()
