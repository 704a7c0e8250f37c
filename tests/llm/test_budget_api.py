from __future__ import annotations

from decimal import Decimal

from apps.accounts.principals import Principal
from apps.llm.budgets import Spender, attempt_reserve
from apps.llm.models import Budget
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from tests.conftest import ApiClientFor


def test_budgets_are_set_listed_with_spend_and_deleted_through_the_api(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    organization_a, organization_b = two_tenants
    client = api_client_for(organization_a)
    created = client.post(
        "/api/v1/budgets",
        {"scope": "organization", "period": "day", "limit_usd": "2.50", "soft_percent": 80},
        format="json",
    )
    assert created.status_code == 201, created.content
    budget = created.json()
    assert (budget["limit_usd"], budget["spent_usd"], budget["hard"]) == ("2.500000", "0.00000000", True)
    with organization_schema(organization_a):
        attempt_reserve(
            spender=Spender(organization=organization_a, principal=Principal(kind="api_key", id="1", label="k")),
            request_id="r1",
            attempt=1,
            model_name="gpt-4o-mini",
            provider="openai",
            amount_usd=Decimal("0.5"),
            max_cost_usd=None,
        )
    listed = client.get("/api/v1/budgets").json()["results"]
    assert [(b["id"], Decimal(b["reserved_usd"]), Decimal(b["remaining_usd"])) for b in listed] == [
        (budget["id"], Decimal("0.5"), Decimal("2.0"))
    ]
    changed = client.post(
        "/api/v1/budgets", {"scope": "organization", "period": "day", "limit_usd": "5"}, format="json"
    ).json()
    assert changed["id"] == budget["id"] and changed["limit_usd"] == "5.000000"

    other = api_client_for(organization_b)
    assert other.get("/api/v1/budgets").json()["results"] == []
    assert other.delete(f"/api/v1/budgets/{budget['id']}").status_code == 404
    assert client.delete(f"/api/v1/budgets/{budget['id']}").status_code == 204
    with organization_schema(organization_a):
        assert not Budget.objects.exists()


def test_a_user_budget_needs_the_users_id(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    refused = api_client_for(two_tenants[0]).post(
        "/api/v1/budgets", {"scope": "user", "period": "month", "limit_usd": "1"}, format="json"
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_budget"
    negative = api_client_for(two_tenants[0]).post(
        "/api/v1/budgets", {"scope": "organization", "period": "month", "limit_usd": "-1"}, format="json"
    )
    assert negative.status_code == 400 and negative.json()["error"]["param"] == "limit_usd"
