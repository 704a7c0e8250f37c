"""The request log page: every call newest first, its filters (bounded, 400 on bad input), keyset
pages with a constant number of queries, a call's detail with or without its content; per
organization and per role."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.accounts.principals import Principal
from apps.apikeys.services import apikey_create
from apps.billing.models import Plan
from apps.llm.calls import chat_call_parse, chat_complete
from apps.llm.models import CallContent, UsageAttempt
from apps.llm.services import llm_settings_set
from apps.rbac.models import CustomRole
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from tests.factories import TEST_ACTOR, member_make
from tests.portal.conftest import ClientFor

ROLES = ["owner", "admin", "developer", "billing", "viewer"]


def signed_in(client_for: ClientFor, organization: Organization, role: str | CustomRole = "owner") -> Client:
    client = client_for(f"{organization.slug}.localhost")
    client.force_login(member_make(organization=organization, role=role))
    return client


def ledger(organization: Organization, count: int, *, start: dt.datetime | None = None, **fields: Any) -> list[str]:
    """`count` settled rows, one second apart (the newest last); their request ids."""
    start = start or timezone.now() - dt.timedelta(hours=1)
    prefix = fields.pop("prefix", "req")
    defaults: dict[str, Any] = {
        "attempt": 1,
        "status": "succeeded",
        "principal_kind": "api_key",
        "principal_id": "5",
        "principal_label": "deploy bot (cos_abc)",
        "api_key_id": 5,
        "model_name": "simulated-mini",
        "model_requested": "simulated-mini",
        "provider": "simulator",
        "source": "gateway",
        "input_tokens": 12,
        "output_tokens": 30,
        "reserved_usd": Decimal("0.0004"),
        "cost_usd": Decimal("0.0001"),
        "latency_ms": 42,
        "rolled_up": True,
    }
    rows = [
        UsageAttempt(
            request_id=f"{prefix}{number:06d}{organization.slug}",
            created_at=start + dt.timedelta(seconds=number),
            settled_at=start + dt.timedelta(seconds=number),
            **{**defaults, **fields},
        )
        for number in range(count)
    ]
    with organization_schema(organization):
        UsageAttempt.objects.bulk_create(rows, batch_size=2000)
    tenant_connection().set_schema_to_public()
    return [row.request_id for row in rows]


def request_ids(html: str) -> list[str]:
    return re.findall(r'<a href="/requests/([^/"]+)/" title=', html)


def counted() -> CaptureQueriesContext:
    connection.queries_log.clear()
    return CaptureQueriesContext(connection)


def test_the_log_lists_calls_newest_first_with_their_figures(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client = signed_in(client_for, organization)
    ids = ledger(organization, 3)
    ledger(
        organization,
        1,
        prefix="fallback",
        start=timezone.now(),
        status="failed",
        attempt=2,
        model_requested="policy:cheapest",
        model_name="gpt-4o-mini",
        error_class="RateLimitError",
        source="job",
    )
    page = client.get("/requests/")
    assert page.status_code == 200
    html = page.content.decode()
    shown = request_ids(html)
    assert shown[1:] == list(reversed(ids)) and shown[0].startswith("fallback")
    assert 'href="/requests/"' in html  # in the navigation
    assert "policy:cheapest →</span> gpt-4o-mini" in html and "RateLimitError" in html and "try 2" in html
    assert "Job" in html and "Gateway /v1/chat/completions" in html
    assert "$0.0001" in html and "of $0.0004" in html and "42 ms" in html and "12 / 30 tokens" in html
    for label in ("From (UTC)", "Until (UTC)", "Model that answered", "API key", "Status", "Cache layer", "Source"):
        assert f">{label}</label>" in html


def test_an_empty_log_says_what_to_do_first(tenant: Organization, client_for: ClientFor) -> None:
    tenant_connection().set_schema_to_public()
    html = signed_in(client_for, tenant).get("/requests/").content.decode()
    assert "No calls yet." in html and 'href="/playground/"' in html


def test_each_filter_narrows_the_log(two_tenants: tuple[Organization, Organization], client_for: ClientFor) -> None:
    organization = two_tenants[0]
    key = apikey_create(organization=organization, name="ci key", actor=TEST_ACTOR).api_key
    tenant_connection().set_schema_to_public()
    client = signed_in(client_for, organization)
    base = ledger(organization, 5)
    failed = ledger(organization, 2, prefix="bad", status="failed", error_class="Timeout")
    hits = ledger(organization, 2, prefix="hit", status="cache_hit", cache_layer="l2", cost_usd=0, reserved_usd=0)
    other_model = ledger(organization, 1, prefix="big", model_name="gpt-4o")
    keyed = ledger(organization, 2, prefix="keyed", api_key_id=key.pk)
    steps = ledger(organization, 1, prefix="step", source="workflow_step")
    old = ledger(organization, 1, prefix="old", start=timezone.now() - dt.timedelta(days=3))

    def shown(**query: str) -> set[str]:
        response = client.get("/requests/", query)
        assert response.status_code == 200, response.content.decode()[:2000]
        return set(request_ids(response.content.decode()))

    assert shown(status="failed") == set(failed)
    assert shown(cache="l2") == set(hits)
    assert shown(cache="miss") == set(base + failed + other_model + keyed + steps + old)
    assert shown(model="gpt-4o") == set(other_model)
    assert shown(key=str(key.pk)) == set(keyed)
    assert shown(source="workflow_step") == set(steps)
    assert shown(request="keyed") == set(keyed)
    assert shown(request=failed[0][:12]) == {failed[0]}
    since = (timezone.now() - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    until = (timezone.now() - dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    assert old[0] not in shown(since=since) and base[0] in shown(since=since)
    assert shown(until=until) == set(old)
    assert shown(status="failed", model="gpt-4o") == set()
    assert "No calls match these filters." in client.get("/requests/", {"model": "nothing-here"}).content.decode()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"status": "exploded"}, "Select a valid choice"),
        ({"cache": "l9"}, "Select a valid choice"),
        ({"source": "elsewhere"}, "Select a valid choice"),
        ({"key": "999999"}, "Select a valid choice"),
        ({"request": "ab"}, "at least 4 characters"),
        ({"request": "abcd%"}, "letters, digits"),
        ({"request": "a" * 65}, "at most 64 characters"),
        ({"model": "x" * 101}, "at most 100 characters"),
        ({"model": "gpt'; --"}, "letters, digits"),
        ({"since": "yesterday"}, "Enter a valid date/time"),
        ({"since": "2026-01-02T00:00", "until": "2026-01-01T00:00"}, "comes after its start"),
        ({"older": "1.2.3"}, "page link is not valid"),
        ({"older": "9" * 45 + ".1"}, "at most 40 characters"),
        ({"newer": "1.a"}, "page link is not valid"),
    ],
)
def test_bad_filters_are_refused_with_a_message(
    tenant: Organization, client_for: ClientFor, query: dict[str, str], message: str
) -> None:
    tenant_connection().set_schema_to_public()
    ledger(tenant, 2)
    response = signed_in(client_for, tenant).get("/requests/", query)
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html and "Some filters are not valid" in html
    assert request_ids(html) == []


def test_keyset_pages_walk_the_log_with_constant_queries(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, settings: Any
) -> None:
    settings.TENANT_RESOLUTION_CACHE_SECONDS = settings.MEMBERSHIP_CACHE_SECONDS = 600
    organization = two_tenants[0]
    client = signed_in(client_for, organization, "viewer")
    ids = ledger(organization, 60, start=timezone.now() - dt.timedelta(days=1))
    client.get("/requests/")  # warm the per-process caches
    with counted() as small:
        client.get("/requests/")
    with counted() as small_filtered:
        client.get("/requests/", {"status": "failed"})
    ids += ledger(organization, 600, prefix="more")
    with counted() as large:
        first = client.get("/requests/").content.decode()
    with counted() as large_filtered:
        client.get("/requests/", {"status": "failed"})
    assert len(large) == len(small), [query["sql"] for query in large]
    assert len(large_filtered) == len(small_filtered)
    assert not any("OFFSET" in query["sql"] for query in large)

    pages: list[list[str]] = []
    html = first
    while True:
        pages.append(request_ids(html))
        older = re.search(r'rel="next" href="\?older=([0-9.]+)"', html)
        if older is None:
            break
        with counted() as deep:
            html = client.get("/requests/", {"older": older.group(1)}).content.decode()
        assert len(deep) <= len(large)
    assert [request_id for page in pages for request_id in page] == list(reversed(ids))
    assert len(pages) == 14 and all(len(page) == 50 for page in pages[:-1])
    newer = re.search(r'rel="prev" href="\?newer=([0-9.]+)"', html)
    assert newer is not None
    back = client.get("/requests/", {"newer": newer.group(1)}).content.decode()
    assert request_ids(back) == pages[-2]
    # Filters are kept in the pager's links.
    filtered = client.get("/requests/", {"model": "simulated-mini"}).content.decode()
    assert re.search(r'rel="next" href="\?model=simulated-mini&amp;older=[0-9.]+"', filtered)


def _call(organization: Organization, text: str) -> str:
    body = {"model": "simulated-mini", "messages": [{"role": "user", "content": text}]}
    principal = Principal(kind="user", id="1", label="alice@example.com")
    with organization_schema(organization):
        outcome = chat_complete(organization=organization, principal=principal, call=chat_call_parse(body))
    tenant_connection().set_schema_to_public()
    return outcome.request_id


def test_a_calls_detail_shows_its_attempts_and_its_content_escaped(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client = signed_in(client_for, organization, "developer")
    request_id = _call(organization, "<script>alert(1)</script> What is 2+2?")
    page = client.get(f"/requests/{request_id}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; What is 2+2?" in html and "<script>alert(1)" not in html
    assert "Prompt and answer" in html and "Kept for 30 days" in html
    # Kept compact (the cheap encoder on the hot path), shown indented.
    with organization_schema(organization):
        assert "\n" not in CallContent.objects.get(request_id=request_id).prompt
    assert "{\n &quot;messages&quot;: [\n  {\n   &quot;role&quot;: &quot;user&quot;" in html
    assert "Model asked" in html and "Reserved from budgets" in html and "Settled (charged)" in html
    assert "simulated-mini" in html
    # It is linked from the log.
    assert f'href="/requests/{request_id}/"' in client.get("/requests/").content.decode()


def test_the_detail_says_when_content_is_not_kept_or_was_deleted(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client = signed_in(client_for, organization)
    kept = _call(organization, "kept for a while")
    (old,) = ledger(organization, 1, prefix="ancient", start=timezone.now() - dt.timedelta(days=40))
    (embedding,) = ledger(organization, 1, prefix="embed", source="embeddings")
    assert "Deleted: this call is older than" in client.get(f"/requests/{old}/").content.decode()
    assert "Not kept for this call" in client.get(f"/requests/{embedding}/").content.decode()
    llm_settings_set(organization=organization, actor=TEST_ACTOR, store_content=False)
    tenant_connection().set_schema_to_public()
    html = client.get(f"/requests/{kept}/").content.decode()
    assert "Not kept: your organization's content policy stores no prompts or answers" in html
    assert "kept for a while" not in html
    with organization_schema(organization):
        assert not CallContent.objects.filter(request_id=kept).exists()
    tenant_connection().set_schema_to_public()


def test_another_organizations_calls_are_never_shown(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    tenant_a, tenant_b = two_tenants
    mine = ledger(tenant_a, 2, prefix="mine")
    theirs = ledger(tenant_b, 2, prefix="theirs")
    client = signed_in(client_for, tenant_a)
    listed = request_ids(client.get("/requests/").content.decode())
    assert set(mine) <= set(listed) and not set(theirs) & set(listed)
    assert request_ids(client.get("/requests/", {"request": "theirs"}).content.decode()) == []
    assert client.get(f"/requests/{theirs[0]}/").status_code == 404
    assert client.get(f"/requests/{mine[0]}/").status_code == 200
    # B's member on A's host is not a member there.
    outsider = signed_in(client_for, tenant_b)
    outsider.defaults["HTTP_HOST"] = f"{tenant_a.slug}.localhost"
    assert outsider.get("/requests/").status_code in (302, 403, 404)
    assert outsider.get(f"/requests/{mine[0]}/").status_code in (302, 403, 404)


def test_a_request_id_that_cannot_exist_is_a_404(tenant: Organization, client_for: ClientFor) -> None:
    tenant_connection().set_schema_to_public()
    client = signed_in(client_for, tenant)
    assert client.get("/requests/" + "a" * 65 + "/").status_code == 404
    assert client.get("/requests/abc%25def/").status_code == 404


@pytest.mark.parametrize("role", ROLES)
def test_every_built_in_role_reads_the_log(tenant: Organization, client_for: ClientFor, role: str) -> None:
    tenant_connection().set_schema_to_public()
    (request_id,) = ledger(tenant, 1)
    client = signed_in(client_for, tenant, role)
    assert client.get("/requests/").status_code == 200
    assert client.get(f"/requests/{request_id}/").status_code == 200


def test_a_role_without_budgets_read_is_refused_and_not_offered(tenant: Organization, client_for: ClientFor) -> None:
    tenant_connection().set_schema_to_public()
    (request_id,) = ledger(tenant, 1)
    tenant.plan = Plan.objects.get(code="enterprise")  # custom roles come with it
    tenant.save(update_fields=["plan"])
    organization_cache_forget()
    auditor = CustomRole.objects.create(organization=tenant, name="Auditor", permissions=["audit:read"])
    client = signed_in(client_for, tenant, auditor)
    assert client.get("/requests/").status_code == 403
    assert client.get(f"/requests/{request_id}/").status_code == 403
    assert 'href="/requests/"' not in client.get("/audit/").content.decode()


def test_signed_out_visitors_are_sent_to_sign_in(tenant: Organization, client_for: ClientFor) -> None:
    tenant_connection().set_schema_to_public()
    response = client_for(f"{tenant.slug}.localhost").get("/requests/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
