"""Every place asks the entitlement function, and refuses what the plan lacks with a status and a
code that name the entitlement: the API (its error shape), the portal (a message and the plan page's
link), the engine (own keys and the semantic cache unused after a downgrade)."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.accounts.models import User
from apps.apikeys.services import apikey_create
from apps.billing.models import Plan
from apps.billing.selectors import EntitlementRefused, entitlement
from apps.billing.services import organization_plan_change
from apps.llm.attempts import Attempts
from apps.llm.budgets import period_start
from apps.llm.models import Budget, BudgetPeriod, BudgetWindow
from apps.llm.plan_budget import PLAN_SCOPE, plan_budget_sync
from apps.llm.services import llm_settings_set, provider_credential_set
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization
from tests.conftest import ApiClientFor
from tests.factories import TEST_ACTOR, member_make
from tests.support.fake_provider import FakeProvider

Committing = Callable[..., Any]


@pytest.fixture
def free(
    two_tenants: tuple[Organization, Organization], django_capture_on_commit_callbacks: Committing
) -> Organization:
    """Organization A on Free (B stays on the suite's plan); rolled back with the test."""
    organization = two_tenants[0]
    with django_capture_on_commit_callbacks(execute=True):
        organization_plan_change(organization=organization, plan=Plan.objects.get(code="free"), actor=TEST_ACTOR)
    tenant_connection().set_schema_to_public()
    return organization


def _refused(response: Any, status: int, code: str, name: str) -> dict[str, Any]:
    assert response.status_code == status, response.content[:300]
    error = response.json()["error"]
    assert (error["code"], error["details"]["entitlement"]) == (code, name), error
    assert "Your plan (Free)" in error["message"]
    return dict(error)


def test_webhook_endpoints_need_the_webhooks_feature(
    free: Organization, two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    body = {"url": "https://hooks.example.com/in", "events": ["*"]}
    _refused(
        api_client_for(free).post("/api/v1/webhooks", body, format="json"), 402, "plan_feature_unavailable", "webhooks"
    )
    # The other organization's plan includes them: its request gets past the plan (to URL checks).
    other = api_client_for(two_tenants[1]).post("/api/v1/webhooks", body, format="json")
    assert other.status_code != 402


def test_audit_export_needs_the_audit_export_feature(free: Organization, api_client_for: ApiClientFor) -> None:
    response = api_client_for(free).get("/api/v1/audit-events/export?format=jsonl")
    _refused(response, 402, "plan_feature_unavailable", "audit_export")


def test_api_keys_stop_at_the_plans_count(free: Organization, api_client_for: ApiClientFor) -> None:
    client = api_client_for(free)  # the first key
    for number in range(4):
        apikey_create(organization=free, name=f"key {number}", actor=TEST_ACTOR)
    error = _refused(
        client.post("/api/v1/keys", {"name": "sixth", "scopes": ["llm:invoke"]}, format="json"),
        403,
        "plan_limit_reached",
        "api_keys",
    )
    assert (error["details"]["limit"], error["details"]["used"], error["details"]["remaining"]) == (5, 5, 0)


def test_own_provider_keys_need_byok_and_are_unused_after_a_downgrade(
    two_tenants: tuple[Organization, Organization], django_capture_on_commit_callbacks: Committing
) -> None:
    organization = two_tenants[0]
    provider_credential_set(organization=organization, provider="openai", api_key="sk-own-key-1234", actor=TEST_ACTOR)
    with django_capture_on_commit_callbacks(execute=True):
        organization_plan_change(organization=organization, plan=Plan.objects.get(code="free"), actor=TEST_ACTOR)
    with pytest.raises(EntitlementRefused) as refused:
        provider_credential_set(
            organization=organization, provider="openai", api_key="sk-own-key-5678", actor=TEST_ACTOR
        )
    assert (refused.value.http_status, refused.value.code, refused.value.name) == (
        402,
        "plan_feature_unavailable",
        "byok",
    )
    runner = Attempts(
        organization=organization,
        spender=None,  # type: ignore[arg-type]
        request_id="r",
        payload=lambda entry: {},
        reservation=lambda entry: Decimal(0),
    )
    assert runner.own_keys == {}  # stored, but the platform's keys serve the calls


def test_settings_need_the_semantic_cache_feature_and_a_retention_within_the_plan(free: Organization) -> None:
    with pytest.raises(EntitlementRefused) as semantic:
        llm_settings_set(organization=free, actor=TEST_ACTOR, semantic_cache=True)
    assert (semantic.value.http_status, semantic.value.name) == (402, "semantic_cache")
    with pytest.raises(EntitlementRefused) as retention:
        llm_settings_set(organization=free, actor=TEST_ACTOR, retention_days=365)
    assert (retention.value.http_status, retention.value.code, retention.value.name) == (
        403,
        "plan_limit_reached",
        "retention_days",
    )
    llm_settings_set(organization=free, actor=TEST_ACTOR, retention_days=30)  # within Free's range


def test_the_plan_budget_is_listed_and_cannot_be_deleted_over_the_api(
    free: Organization, api_client_for: ApiClientFor
) -> None:
    plan_budget_sync(organization=free)
    with organization_schema(free):
        budget = Budget.objects.get(scope=PLAN_SCOPE)
    client = api_client_for(free)
    listed = client.get("/api/v1/budgets").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert any(row["scope"] == PLAN_SCOPE and Decimal(row["limit_usd"]) == Decimal("5.00") for row in rows)
    deleted = client.delete(f"/api/v1/budgets/{budget.pk}")
    assert (deleted.status_code, deleted.json()["error"]["code"]) == (403, "budget_set_by_plan")
    with organization_schema(free):
        assert Budget.objects.filter(pk=budget.pk).exists()


def _owner(organization: Organization) -> tuple[Client, User]:
    user = member_make(organization=organization, role="owner")
    client = Client(HTTP_HOST=f"{organization.slug}.localhost")
    client.force_login(user)
    return client, user


def test_the_portal_says_what_the_plan_lacks_and_links_to_the_plan_page(free: Organization) -> None:
    client, _ = _owner(free)
    page = client.post("/settings/providers/", {"provider": "openai", "api_key": "sk-own-key-1234"})
    assert page.status_code == 402
    html = page.content.decode()
    assert "Your plan (Free) does not include bring-your-own provider keys." in html
    assert 'data-entitlement="byok"' in html
    fragment = client.post(
        "/settings/providers/", {"provider": "openai", "api_key": "sk-own-key-1234"}, HTTP_HX_REQUEST="true"
    )
    assert fragment.status_code == 402 and "<html" not in fragment.content.decode()
    settings_page = client.post(
        "/settings/models/", {"default_policy": "", "semantic_threshold": "0.9", "retention_days": "365"}
    )
    assert (
        settings_page.status_code == 403
        and "allows up to 30 days of content retention" in settings_page.content.decode()
    )


def test_seats_jobs_runs_and_map_items_read_the_plan(free: Organization) -> None:
    # The places that count (invitations, SAML sign-in, job and run admission, map steps) ask for
    # these numbers; their refusals are tested where they live (tests/rbac, tests/sso, tests/jobs,
    # tests/workflows). Here: Free's numbers are what those places get.
    assert [
        entitlement(free, name).limit for name in ("members", "concurrent_jobs", "concurrent_runs", "map_items")
    ] == [
        3,
        2,
        2,
        100,
    ]
    assert not entitlement(free, "members", used=3).allowed


def test_a_call_past_frees_included_usage_is_refused_402_on_v1(
    free: Organization,
    fake_provider: FakeProvider,
    django_capture_on_commit_callbacks: Committing,
) -> None:
    plan_budget_sync(organization=free)
    key = apikey_create(organization=free, name="calls", actor=TEST_ACTOR).key
    with organization_schema(free):
        budget = Budget.objects.get(scope=PLAN_SCOPE)
        BudgetWindow.objects.create(
            budget=budget, period_start=period_start(BudgetPeriod.MONTH, timezone.now()), spent_usd=Decimal("4.9999999")
        )
    tenant_connection().set_schema_to_public()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 100}
    answer = Client().post(
        "/v1/chat/completions",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_HOST="localhost",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert answer.status_code == 402
    error = answer.json()["error"]
    assert error["code"] == "plan_usage_exhausted" and "included usage this month ($5.00)" in error["message"]
    assert fake_provider.calls == []  # refused before the provider was called
    # The same call from an organization on a plan with overage goes through (no plan budget).
    with django_capture_on_commit_callbacks(execute=True):
        organization_plan_change(organization=free, plan=Plan.objects.get(code="pro"), actor=TEST_ACTOR)
    tenant_connection().set_schema_to_public()
    assert plan_budget_sync(organization=free) is None


def test_the_budgets_page_shows_the_plan_budget_as_the_plans(free: Organization) -> None:
    plan_budget_sync(organization=free)
    with organization_schema(free):
        budget = Budget.objects.get(scope=PLAN_SCOPE)
    tenant_connection().set_schema_to_public()
    client, _ = _owner(free)
    page = client.get("/budgets/")
    html = page.content.decode()
    assert page.status_code == 200, html[-3000:]
    assert "Plan: included usage" in html and "Set by your plan" in html
    assert f"/budgets/{budget.pk}/remove/" not in html and f"?edit={budget.pk}" not in html
    removed = client.post(f"/budgets/{budget.pk}/remove/", follow=True)
    assert "the plan&#x27;s included usage" in removed.content.decode()
    with organization_schema(free):
        assert Budget.objects.filter(pk=budget.pk).exists()


def test_seats_and_custom_roles_keep_their_codes_and_name_the_entitlement(free: Organization) -> None:
    owner, _ = _owner(free)  # the factory's owner, and this one: 2 of Free's 3 seats
    first = owner.post(
        "/api/v1/invitations", {"email": "third@example.com", "role": "viewer"}, content_type="application/json"
    )
    assert first.status_code == 201, first.content
    refused = owner.post(
        "/api/v1/invitations", {"email": "fourth@example.com", "role": "viewer"}, content_type="application/json"
    )
    error = refused.json()["error"]
    assert (refused.status_code, error["code"]) == (403, "plan_limit_members")
    assert (error["details"]["entitlement"], error["details"]["limit"], error["details"]["used"]) == ("members", 3, 3)
    role = owner.post(
        "/api/v1/roles", {"name": "Auditors", "permissions": ["audit:read"]}, content_type="application/json"
    )
    assert (role.status_code, role.json()["error"]["code"], role.json()["error"]["details"]["entitlement"]) == (
        403,
        "plan_limit",
        "custom_roles",
    )
