"""The Budgets page writes amounts as set: a limit below a cent (the form takes six decimals) is not
rounded to "$0.00", and what is spent or reserved below a ten-thousandth of a dollar still shows."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from apps.llm.budgets import period_start
from apps.llm.models import BudgetWindow
from apps.llm.services import budget_set
from apps.portal.templatetags.money import dollars
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR, member_make
from tests.portal.conftest import ClientFor


@pytest.mark.parametrize(
    ("value", "places", "shown"),
    [
        (Decimal(10), 2, "10.00"),
        (Decimal("12.5"), 2, "12.50"),
        (Decimal("0.000001"), 2, "0.000001"),
        (Decimal("1.25"), 4, "1.2500"),
        (Decimal("0.00000945"), 4, "0.00000945"),
        (Decimal("0.000000001"), 4, "0.00000000"),  # past the ledger's 8 places: rounded there
        (Decimal(0), 4, "0.0000"),
        (Decimal("-0.5"), 2, "-0.50"),
        (None, 2, ""),
    ],
)
def test_dollars_keeps_every_digit_the_amount_has(value: Decimal | None, places: int, shown: str) -> None:
    assert dollars(value, places) == shown


def test_a_limit_below_a_cent_and_a_tiny_spend_are_shown_as_they_are(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    tiny = budget_set(
        organization=organization,
        scope="organization",
        period="day",
        limit_usd=Decimal("0.000001"),
        hard=True,
        actor=TEST_ACTOR,
    )
    budget_set(organization=organization, scope="organization", period="month", limit_usd=Decimal(10), actor=TEST_ACTOR)
    with organization_schema(organization):
        BudgetWindow.objects.create(
            budget=tiny,
            period_start=period_start("day", timezone.now()),
            spent_usd=Decimal("0.00000945"),
            reserved_usd=Decimal("0.0003246"),
        )
    client = client_for(f"{organization.slug}.localhost")
    client.force_login(member_make(organization=organization, role="owner"))
    html = client.get("/budgets/").content.decode()
    assert "$0.000001" in html and "$0.00<br>" not in html
    assert "$0.00000945" in html and "+ $0.0003246 reserved" in html
    assert "$10.00" in html and "$0.0000" in html  # the monthly one: nothing spent yet
