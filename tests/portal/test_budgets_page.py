"""The portal's Budgets page: set, change and remove budgets at each scope (targets chosen from
lists), their spend shown; bounds answered 400 at the field; per role and per organization."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from apps.accounts.models import User
from apps.apikeys.services import apikey_create
from apps.audit.models import AuditEvent
from apps.llm.budgets import period_start
from apps.llm.models import Budget, BudgetWindow
from apps.llm.services import budget_set
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR, member_make
from tests.portal.conftest import ClientFor


def signed_in(client_for: ClientFor, organization: Organization, role: str) -> tuple[Client, User]:
    user = member_make(organization=organization, role=role)
    client = client_for(f"{organization.slug}.localhost")
    client.force_login(user)
    return client, user


def budgets_of(organization: Organization) -> list[Budget]:
    with organization_schema(organization):
        return list(Budget.objects.order_by("scope", "period"))


def test_an_owner_sets_changes_and_removes_budgets_at_each_scope(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, owner = signed_in(client_for, organization, "owner")
    empty = client.get("/budgets/")
    assert empty.status_code == 200
    html = empty.content.decode()
    assert "No budgets yet" in html and 'aria-current="page"' in html
    assert '<label for="id_target">Applies to</label>' in html

    key = apikey_create(organization=organization, name="nightly batch", actor=TEST_ACTOR, scopes=["llm:invoke"])
    page = client.get("/budgets/").content.decode()
    # Keys by name and members by email: nobody types an id.
    assert f'value="key:{key.api_key.pk}"' in page and "Key: nightly batch" in page
    assert f'value="user:{owner.pk}"' in page and f"Member: {owner.email}" in page

    saved = client.post("/budgets/", {"target": "organization", "period": "month", "limit_usd": "100", "hard": "on"})
    assert saved.status_code == 302
    client.post(
        "/budgets/",
        {"target": f"key:{key.api_key.pk}", "period": "day", "limit_usd": "5.5", "soft_percent": "80", "hard": "on"},
    )
    client.post("/budgets/", {"target": f"user:{owner.pk}", "period": "day", "limit_usd": "2"})
    scopes = {(b.scope, b.scope_id, b.period): b for b in budgets_of(organization)}
    assert scopes[("organization", "", "month")].limit_usd == Decimal(100)
    key_budget = scopes[("key", str(key.api_key.pk), "day")]
    assert key_budget.limit_usd == Decimal("5.5") and key_budget.soft_percent == 80 and key_budget.hard
    assert not scopes[("user", str(owner.pk), "day")].hard  # the box unticked: not enforced

    # Spend shows as spent, reserved and remaining for the current period.
    with organization_schema(organization):
        BudgetWindow.objects.create(
            budget=key_budget,
            period_start=period_start("day", timezone.now()),
            spent_usd=Decimal("1.25"),
            reserved_usd=Decimal("0.25"),
        )
    listed = client.get("/budgets/").content.decode()
    assert "Key: nightly batch" in listed and "$1.2500" in listed and "$0.2500" in listed and "$4.0000" in listed
    assert 'value="27"' in listed  # the gauge: 1.50 of 5.50 used or reserved

    # Change: the edit link fills the form; the same target and period replace the budget.
    edit = client.get(f"/budgets/?edit={key_budget.pk}").content.decode()
    assert "Change a budget" in edit and 'value="5.5"' in edit
    client.post("/budgets/", {"target": f"key:{key.api_key.pk}", "period": "day", "limit_usd": "9", "hard": "on"})
    with organization_schema(organization):
        assert Budget.objects.get(pk=key_budget.pk).limit_usd == Decimal(9)

    removed = client.post(f"/budgets/{key_budget.pk}/remove/", follow=True)
    assert removed.status_code == 200 and b"Budget removed" in removed.content
    assert len(budgets_of(organization)) == 2
    with organization_schema(organization):
        actions = set(AuditEvent.objects.filter(actor_label=owner.email).values_list("action", flat=True))
    assert {"budget.created", "budget.changed", "budget.deleted"} <= actions


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"target": "organization", "period": "month", "limit_usd": "-1"}, "limit_usd", "greater than or equal to 0"),
        ({"target": "organization", "period": "month", "limit_usd": "1e20"}, "limit_usd", "no more than 14 digits"),
        ({"target": "organization", "period": "month", "limit_usd": "1.1234567"}, "limit_usd", "6 decimal places"),
        ({"target": "organization", "period": "week", "limit_usd": "1"}, "period", "valid choice"),
        ({"target": "organization", "period": "day", "limit_usd": "1", "soft_percent": "0"}, "soft_percent", "1"),
        ({"target": "organization", "period": "day", "limit_usd": "1", "soft_percent": "101"}, "soft_percent", "100"),
        ({"target": "key:999999", "period": "day", "limit_usd": "1"}, "target", "valid choice"),
        ({"target": "user:abc", "period": "day", "limit_usd": "1"}, "target", "valid choice"),
        ({"period": "day", "limit_usd": "1"}, "target", "required"),
    ],
)
def test_bad_budgets_are_answered_400_at_their_field_and_nothing_is_written(
    two_tenants: tuple[Organization, Organization],
    client_for: ClientFor,
    data: dict[str, str],
    field: str,
    message: str,
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, "billing")
    answer = client.post("/budgets/", data)
    assert answer.status_code == 400
    html = answer.content.decode()
    assert f'id="id_{field}_error"' in html
    error = html.split(f'id="id_{field}_error">', 1)[1].split("</p>", 1)[0]
    assert message in error
    assert budgets_of(organization) == []


@pytest.mark.parametrize(
    ("role", "sees", "manages"),
    [
        ("owner", 200, True),
        ("admin", 200, True),
        ("billing", 200, True),
        ("developer", 200, False),
        ("viewer", 200, False),
    ],
)
def test_each_role_sees_budgets_and_only_budgets_manage_may_change_them(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, role: str, sees: int, manages: bool
) -> None:
    organization = two_tenants[0]
    budget = budget_set(
        organization=organization, scope="organization", period="month", limit_usd=Decimal(10), actor=TEST_ACTOR
    )
    client, _ = signed_in(client_for, organization, role)
    page = client.get("/budgets/")
    assert page.status_code == sees
    html = page.content.decode()
    assert "Organization" in html and "$10.00" in html
    assert ("Save budget" in html) is manages and ("Remove the" in html) is manages
    posted = client.post("/budgets/", {"target": "organization", "period": "day", "limit_usd": "1"})
    removed = client.post(f"/budgets/{budget.pk}/remove/")
    if manages:
        assert posted.status_code == 302 and removed.status_code == 302
    else:
        assert posted.status_code == 403 and removed.status_code == 403
        assert len(budgets_of(organization)) == 1


def test_another_organizations_budgets_are_neither_shown_nor_removable(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization_a, organization_b = two_tenants
    key_a = apikey_create(organization=organization_a, name="key-of-a", actor=TEST_ACTOR, scopes=["llm:invoke"])
    budget_a = budget_set(
        organization=organization_a, scope="key", scope_id=str(key_a.api_key.pk), period="day",
        limit_usd=Decimal("3.21"), actor=TEST_ACTOR,
    )  # fmt: skip
    client_b, _ = signed_in(client_for, organization_b, "owner")
    page_b = client_b.get("/budgets/").content.decode()
    assert "key-of-a" not in page_b and "3.21" not in page_b and "No budgets yet" in page_b
    assert client_b.post(f"/budgets/{budget_a.pk}/remove/").status_code == 404
    # B's form doesn't take A's key either.
    refused = client_b.post("/budgets/", {"target": f"key:{key_a.api_key.pk}", "period": "day", "limit_usd": "1"})
    assert refused.status_code == 400
    assert len(budgets_of(organization_a)) == 1 and budgets_of(organization_b) == []
    # A member of B is not a member of A: A's page is not theirs.
    assert client_for(f"{organization_a.slug}.localhost").get("/budgets/").status_code == 302
