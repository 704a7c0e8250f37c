"""The portal's dashboard: numbers from the rollups that match the ledger after a fold, per
organization and role, its CSV (formula injection neutralised), bad ranges refused, budget gauges,
the empty state, and a query count that doesn't grow with the usage."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.db.models import Count, Q, Sum
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.accounts.models import User
from apps.apikeys.services import apikey_create
from apps.billing.models import Plan
from apps.llm.budgets import usage_fold
from apps.llm.models import AttemptStatus, Budget, BudgetWindow, UsageAttempt
from apps.portal.templatetags.usage_format import usd
from apps.rbac.models import CustomRole
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from tests.factories import TEST_ACTOR, member_make
from tests.portal.conftest import ClientFor


def signed_in(client_for: ClientFor, organization: Organization, role: str | CustomRole) -> tuple[Client, User]:
    user = member_make(organization=organization, role=role)
    client = client_for(f"{organization.slug}.localhost")
    client.force_login(user)
    return client, user


def ledger(organization: Organization, rows: int, *, key_id: int | None, user_id: int | None, **fields: Any) -> None:
    """`rows` settled ledger rows in the last hours, as the engine leaves them (then folded)."""
    now = timezone.now()
    values: list[UsageAttempt] = []
    for n in range(rows):
        values.append(
            UsageAttempt(
                request_id=uuid.uuid4().hex,
                attempt=1,
                status=fields.get("status", AttemptStatus.SUCCEEDED if n % 5 else AttemptStatus.CACHE_HIT),
                principal_kind="api_key" if key_id else "user",
                api_key_id=key_id,
                user_id=user_id,
                model_name=fields.get("model_name", ["simulated-mini", "simulated-pro"][n % 2]),
                provider="simulator",
                input_tokens=100 + n,
                output_tokens=20,
                cost_usd=Decimal("0") if n % 5 == 0 else Decimal("0.0015"),
                saved_usd=Decimal("0.0015") if n % 5 == 0 else Decimal("0"),
                settled_at=now - dt.timedelta(minutes=7 * n % 600),
                latency_ms=40 + 30 * n,
                cache_layer="l1" if n % 5 == 0 else "",
            )
        )
    with schema_context(organization.schema_name):
        UsageAttempt.objects.bulk_create(values)
    usage_fold(organization=organization)


def ledger_totals(organization: Organization) -> dict[str, Any]:
    with schema_context(organization.schema_name):
        return UsageAttempt.objects.exclude(status=AttemptStatus.RESERVED).aggregate(
            requests=Count("id", filter=Q(status__in=[AttemptStatus.SUCCEEDED, AttemptStatus.CACHE_HIT])),
            hits=Count("id", filter=Q(status=AttemptStatus.CACHE_HIT)),
            errors=Count("id", filter=Q(status=AttemptStatus.FAILED)),
            cost=Sum("cost_usd"),
            saved=Sum("saved_usd"),
            tokens_in=Sum("input_tokens"),
        )


def test_the_numbers_shown_match_the_ledger_after_a_fold(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, owner = signed_in(client_for, organization, "owner")
    key = apikey_create(organization=organization, name="nightly batch", actor=TEST_ACTOR, scopes=["llm:invoke"])
    ledger(organization, 12, key_id=key.api_key.pk, user_id=None)
    ledger(organization, 3, key_id=None, user_id=owner.pk)
    ledger(organization, 2, key_id=key.api_key.pk, user_id=None, status=AttemptStatus.FAILED)
    expected = ledger_totals(organization)

    page = client.get("/usage/?range=24h")
    assert page.status_code == 200
    total = page.context["dashboard"].series.total
    assert (total.requests, total.cache_hits, total.errors) == (expected["requests"], expected["hits"], 2)
    assert (total.cost_usd, total.saved_usd, total.input_tokens) == (
        expected["cost"],
        expected["saved"],
        expected["tokens_in"],
    )
    html = page.content.decode()
    assert f"<dd>{usd(expected['cost'])}</dd>" in html and usd(expected["cost"]).startswith("$0.0")
    assert f"<dd>{expected['requests']:,}</dd>" in html
    assert "nightly batch" in html and owner.email in html and "simulated-pro" in html
    assert 'data-chart="spend"' in html and 'id="usage-series"' in html
    assert '<a href="/usage/?range=24h" aria-current="true"' in html
    # The same numbers over 7 and 90 days (hour and day buckets).
    for range_key in ("7d", "90d"):
        longer = client.get(f"/usage/?range={range_key}").context["dashboard"].series.total
        assert (longer.requests, longer.cost_usd) == (expected["requests"], expected["cost"])


def test_another_organizations_usage_never_appears_and_its_members_are_refused(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, tenant_b = two_tenants
    client_a, _ = signed_in(client_for, tenant_a, "owner")
    key_b = apikey_create(organization=tenant_b, name="b-only key", actor=TEST_ACTOR, scopes=["llm:invoke"])
    ledger(tenant_b, 5, key_id=key_b.api_key.pk, user_id=None, model_name="simulated-pro")
    ledger(tenant_a, 1, key_id=None, user_id=None, model_name="simulated-mini")

    html = client_a.get("/usage/?range=24h").content.decode()
    assert "b-only key" not in html and "simulated-pro" not in html
    csv_a = client_a.get("/usage/export.csv?range=24h&by=key").content.decode()
    assert "b-only key" not in csv_a

    # B's owner on A's host: not a member there.
    member_b = member_make(organization=tenant_b, role="owner")
    stranger = client_for(f"{tenant_a.slug}.localhost")
    stranger.force_login(member_b)
    assert stranger.get("/usage/").status_code == 403
    assert stranger.get("/usage/export.csv").status_code == 403


@pytest.mark.parametrize("role", ["owner", "admin", "developer", "billing", "viewer"])
def test_every_built_in_role_sees_the_dashboard(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, role: str
) -> None:
    client, _ = signed_in(client_for, two_tenants[0], role)
    page = client.get("/usage/")
    assert page.status_code == 200
    assert 'href="/usage/" aria-current="page"' in page.content.decode()  # in the navigation
    assert client.get("/usage/export.csv").status_code == 200


def test_a_role_without_budgets_read_is_refused_and_not_offered_the_page(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    organization.plan = Plan.objects.get(code="enterprise")
    organization.save(update_fields=["plan"])
    organization_cache_forget()
    auditor = CustomRole.objects.create(organization=organization, name="Auditor", permissions=["audit:read"])
    client, _ = signed_in(client_for, organization, auditor)
    assert client.get("/usage/").status_code == 403
    assert client.get("/usage/export.csv?by=model").status_code == 403
    assert 'href="/usage/"' not in client.get("/").content.decode()
    signed_out = client_for(f"{organization.slug}.localhost").get("/usage/")
    assert signed_out.status_code == 302 and "/accounts/login/" in signed_out["Location"]


def test_the_csv_has_every_row_and_labels_that_a_spreadsheet_will_not_run(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, "billing")
    key = apikey_create(
        organization=organization, name='=HYPERLINK("http://x")', actor=TEST_ACTOR, scopes=["llm:invoke"]
    )
    ledger(organization, 4, key_id=key.api_key.pk, user_id=None, model_name="@SUM(A1)")
    ledger(organization, 1, key_id=None, user_id=None, model_name="-2+3")

    by_key = client.get("/usage/export.csv?range=24h&by=key")
    assert by_key.status_code == 200
    assert by_key["Content-Type"] == "text/csv; charset=utf-8"
    assert by_key["Content-Disposition"] == f'attachment; filename="usage-{organization.slug}-24h-by-key.csv"'
    rows = list(csv.DictReader(io.StringIO(by_key.content.decode())))
    assert {row["api_key"] for row in rows} == {'\'=HYPERLINK("http://x")', "No key (portal, jobs, workflows)"}
    keyed = next(row for row in rows if row["api_key"].startswith("'="))
    assert (keyed["requests"], keyed["cache_hits"], keyed["cost_usd"]) == ("4", "1", "0.00450000")
    assert keyed["p50_latency_ms"] and keyed["p95_latency_ms"]

    models = {
        row["model"] for row in csv.DictReader(io.StringIO(client.get("/usage/export.csv?by=model").content.decode()))
    }
    assert models == {"'@SUM(A1)", "'-2+3"}
    by_time = list(csv.DictReader(io.StringIO(client.get("/usage/export.csv?range=30d&by=time").content.decode())))
    assert len(by_time) == 30 and sum(int(row["requests"]) for row in by_time) == 5
    assert by_time[0]["day_start_utc"] < by_time[-1]["day_start_utc"]
    # On the page the label is escaped, never run.
    html = client.get("/usage/?range=24h").content.decode()
    assert "=HYPERLINK(&quot;http://x&quot;)" in html


def test_a_bad_range_or_breakdown_is_refused_with_a_message(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    client, _ = signed_in(client_for, two_tenants[0], "viewer")
    page = client.get("/usage/?range=1y")
    assert page.status_code == 400
    assert "Choose one of the ranges offered: 24h, 7d, 30d or 90d." in page.content.decode()
    export = client.get("/usage/export.csv?range=7d&by=planet")
    assert export.status_code == 400 and b"Choose one of: time, model, key, user." in export.content
    assert client.get("/usage/export.csv?range=%3Cscript%3E").status_code == 400


def test_budget_gauges_show_spent_reserved_and_remaining_against_the_limits(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, viewer = signed_in(client_for, organization, "viewer")
    today = timezone.now().date()
    with schema_context(organization.schema_name):
        daily = Budget.objects.create(scope="organization", period="day", limit_usd=Decimal(10), soft_percent=50)
        BudgetWindow.objects.create(budget=daily, period_start=today, spent_usd=Decimal(6), reserved_usd=Decimal(1))
        Budget.objects.create(scope="user", scope_id=str(viewer.pk), period="month", limit_usd=Decimal(100), hard=False)
    html = client.get("/usage/").content.decode()
    assert "<strong>$6.00</strong> spent + $1.00 reserved of $10.00" in html
    assert "<strong>$3.00</strong> left." in html and "Soft limit at $5.00 (50%)." in html
    assert "Past the soft limit" in html
    assert 'min="0" max="10.000000" low="5.000000" high="9.990000000" optimum="0" value="7.00000000"' in html
    assert viewer.email in html and "Not enforced: calls go on past it." in html


def test_a_new_organization_is_told_what_to_do_first(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    client, _ = signed_in(client_for, two_tenants[0], "developer")
    html = client.get("/usage/").content.decode()
    assert "No usage yet" in html and 'href="/keys/"' in html
    assert "Create an API key" in html and 'id="usage-series"' not in html
    viewer, _ = signed_in(client_for, two_tenants[0], "viewer")
    told = viewer.get("/usage/").content.decode()
    assert "Create an API key" not in told and "Ask a developer or an administrator" in told


def _queries(client: Client, path: str) -> int:
    client.get(path)  # warm: per-process caches of the tenant and the membership
    with CaptureQueriesContext(connection) as queries:
        assert client.get(path).status_code == 200
    return len([q for q in queries if not q["sql"].startswith("SET search_path")])


def test_the_query_count_does_not_grow_with_the_usage(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, owner = signed_in(client_for, organization, "owner")
    first = apikey_create(organization=organization, name="first", actor=TEST_ACTOR, scopes=["llm:invoke"])
    ledger(organization, 3, key_id=first.api_key.pk, user_id=None)
    ledger(organization, 1, key_id=None, user_id=owner.pk)
    few = {range_key: _queries(client, f"/usage/?range={range_key}") for range_key in ("24h", "90d")}
    for n in range(6):
        key = apikey_create(organization=organization, name=f"key {n}", actor=TEST_ACTOR, scopes=["llm:invoke"])
        ledger(organization, 20, key_id=key.api_key.pk, user_id=None, model_name=f"model-{n}")
        person = member_make(organization=organization, role="developer")
        ledger(organization, 5, key_id=None, user_id=person.pk)
    many = {range_key: _queries(client, f"/usage/?range={range_key}") for range_key in ("24h", "90d")}
    assert many == few
    assert _queries(client, "/usage/export.csv?range=7d&by=user") <= few["24h"]


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (Decimal("1234.5"), "$1,234.50"),
        (Decimal("0.5"), "$0.50"),
        (Decimal("0.0042"), "$0.0042"),
        (Decimal("0.000016"), "$0.000016"),  # one cheap call: never "$0.00"
        (Decimal("0.00001234"), "$0.000012"),
        (Decimal(0), "$0.00"),
        (None, "—"),
    ],
)
def test_dollars_are_written_so_a_cheap_call_is_not_zero(amount: Decimal | None, shown: str) -> None:
    assert usd(amount) == shown
