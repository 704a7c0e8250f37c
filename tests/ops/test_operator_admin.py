"""The operators' Django admin, through HTTP with the test client: staff with a second factor on the
platform host only; organization actions audited in both logs; deployments; jobs of one chosen
organization; support access to one organization's portal that expires by itself."""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.accounts.models import User
from apps.apikeys.selectors import apikey_cache_forget
from apps.audit.models import AuditEvent
from apps.billing.models import Plan
from apps.jobs.models import Job
from apps.llm.breaker import breaker_state
from apps.llm.platform.models import UsageBucket, UsageSpan
from apps.llm.platform.selectors import catalog_forget
from apps.ops.models import OperatorAction, SupportAccessGrant
from apps.ops.services import operator_breaker_open, operator_principal
from apps.rbac.models import Membership
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from cognitionos.redis import redis_client
from tests.factories import plan_make

PASSWORD = "a-long-enough-passphrase-42"
ApiClientFor = Callable[[Organization], Any]


@pytest.fixture(autouse=True)
def _fresh_shared_state() -> Iterator[None]:
    def forget() -> None:
        client = redis_client()
        keys = list(client.scan_iter("llm:*", count=1000))
        if keys:
            client.delete(*keys)
        catalog_forget()
        organization_cache_forget()

    forget()
    yield
    forget()


def _staff(email: str = "operator@cognitionos.example.com", *, with_factor: bool = True) -> User:
    user = User.objects.create_user(email=email, password=PASSWORD, is_staff=True)
    if with_factor:
        TOTP.activate(user, generate_totp_secret())
    return user


def _signed_in(user: User, *, host: str = "localhost", used_factor: bool = True) -> Client:
    client = Client(HTTP_HOST=host)
    client.force_login(user)
    if used_factor:
        # What allauth records when the session passes the second factor (sign-in or reauthentication).
        session = client.session
        session["account_authentication_methods"] = [{"method": "mfa", "at": time.time(), "type": "totp"}]
        session["account_authentication_methods_user"] = str(user.pk)
        session.save()
    return client


@pytest.fixture
def operator(db: None) -> User:
    tenant_connection().set_schema_to_public()
    return _staff()


@pytest.fixture
def admin_client(operator: User) -> Client:
    return _signed_in(operator)


def _url(name: str, *args: Any) -> str:
    return reverse(name, args=args, urlconf="cognitionos.urls_public")


def _job(status: str, **values: Any) -> Job:
    """A job row in the current schema, as the runtime leaves it in that status."""
    now = timezone.now()
    if status == "running":
        values = {"started_at": now, "heartbeat_at": now, "attempts": 1, **values}
    if status in ("succeeded", "failed", "cancelled"):
        values = {"started_at": now, "finished_at": now, "attempts": 1, **values}
    return Job.objects.create(request={"model": "simulated-mini"}, status=status, principal_kind="system", **values)


def _events(organization: Organization, action: str) -> list[AuditEvent]:
    with schema_context(organization.schema_name):
        return list(AuditEvent.objects.filter(action=action).order_by("id"))


def _operate(client: Client, organization: Organization, action: str, **data: Any) -> Any:
    url = _url("admin:ops_organization_operate", organization.pk, action)
    return client.post(url, data, HTTP_HOST="localhost")


# --- Who may enter, and where ---------------------------------------------------------------------


def test_the_admin_sends_staff_without_a_second_factor_to_set_one_up(db: None) -> None:
    user = _staff("no-factor@cognitionos.example.com", with_factor=False)
    response = _signed_in(user, used_factor=False).get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("mfa_activate_totp"))


def test_the_admin_asks_again_for_the_factor_when_the_session_did_not_use_it(db: None) -> None:
    user = _staff("password-only@cognitionos.example.com")
    response = _signed_in(user, used_factor=False).get("/admin/tenants/organization/")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("mfa_reauthenticate"))


def test_the_admin_lets_in_staff_whose_session_used_the_second_factor(admin_client: Client) -> None:
    response = admin_client.get("/admin/")
    assert response.status_code == 200
    assert b"Deployments" in response.content and b"Jobs and workflow runs" in response.content


def test_people_who_are_not_staff_get_the_sign_in_page(db: None) -> None:
    user = User.objects.create_user(email="member@example.com", password=PASSWORD)
    TOTP.activate(user, generate_totp_secret())
    response = _signed_in(user).get("/admin/tenants/organization/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_admin_is_not_routed_on_an_organization_host(
    two_tenants: tuple[Organization, Organization], operator: User
) -> None:
    client = _signed_in(operator, host="tenant-a.localhost")
    assert client.get("/admin/").status_code == 404
    assert client.get("/admin/login/").status_code == 404
    assert client.get("/admin/ops/deployments/").status_code == 404


# --- Organizations ---------------------------------------------------------------------------------


def test_the_organization_list_shows_plan_members_and_this_periods_spend_in_a_bounded_number_of_queries(
    two_tenants: tuple[Organization, Organization],
    admin_client: Client,
    django_assert_max_num_queries: Any,
) -> None:
    first, second = two_tenants
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    UsageBucket.objects.create(
        organization=first, span=UsageSpan.DAY_TOTAL, start=today, model_name="", requests=7, cost_usd=Decimal("1.25")
    )
    UsageBucket.objects.create(
        organization=first,
        span=UsageSpan.DAY_TOTAL,
        start=today - dt.timedelta(days=40),  # an earlier period: not counted
        model_name="",
        requests=1000,
        cost_usd=Decimal("99"),
    )
    # session, user, authenticator, the page's rows with their subqueries, filters: not one per row
    with django_assert_max_num_queries(12):
        response = admin_client.get("/admin/tenants/organization/")
    assert response.status_code == 200
    with CaptureQueriesContext(connection) as few:  # warm now (content types, permission caches)
        admin_client.get("/admin/tenants/organization/")
    page = response.content.decode()
    row_a = re.search(r"<tr[^>]*>(?:(?!</tr>).)*tenant-a(?:(?!</tr>).)*</tr>", page, re.S)
    assert row_a is not None
    assert "1.25" in row_a.group(0) and ">7<" in row_a.group(0)
    assert "99.00" not in page
    assert second.slug in page

    # Twenty more organizations (rows only: the list never enters a schema), with members and usage.
    more = Organization.objects.bulk_create(
        Organization(slug=f"bulk-{n:02d}", name=f"Bulk {n}", schema_name=f"org_bulk_{n:02d}", plan_id=first.plan_id)
        for n in range(20)
    )
    for organization in more:
        UsageBucket.objects.create(
            organization=organization, span=UsageSpan.DAY_TOTAL, start=today, model_name="", cost_usd=Decimal("2")
        )
        Membership.objects.create(
            user=User.objects.create_user(email=f"member@{organization.slug}.example.com"), organization=organization
        )
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get("/admin/tenants/organization/")
    assert response.content.decode().count("field-period_spend_display") == 22
    assert len(many.captured_queries) == len(few.captured_queries), (len(few), len(many))


def test_the_organization_page_counts_its_open_jobs_and_names_every_action(
    two_tenants: tuple[Organization, Organization], admin_client: Client
) -> None:
    first, second = two_tenants
    with schema_context(first.schema_name):
        for status in ("queued", "running", "failed"):
            _job(status)
    response = admin_client.get(_url("admin:tenants_organization_change", first.pk))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Open jobs:</strong> 1 queued, 1 running" in page
    links = re.findall(r"<a [^>]*href=\"/admin/tenants/organization/\d+/operate/[^\"]+\"[^>]*>([^<]*)</a>", page)
    assert {"Suspend organization", "Change plan", "Schedule deletion", "Ask for support access"} <= set(links)
    assert all(label.strip() for label in links)
    other = admin_client.get(_url("admin:tenants_organization_change", second.pk)).content.decode()
    assert "Open jobs:</strong> 0 queued, 0 running" in other  # its own schema's jobs only


def test_suspending_refuses_the_organizations_api_and_portal_and_resuming_restores_them(
    two_tenants: tuple[Organization, Organization], admin_client: Client, api_client_for: ApiClientFor
) -> None:
    first, second = two_tenants
    api_a, api_b = api_client_for(first), api_client_for(second)
    assert api_a.get("/v1/models").status_code == 200

    response = _operate(admin_client, first, "suspend", reason="unpaid invoices, ticket 42")
    assert response.status_code == 302
    # The services forget this process's cached resolutions on commit; the test's transaction never
    # commits (other processes see the change within TENANT_RESOLUTION_CACHE_SECONDS).
    organization_cache_forget()
    apikey_cache_forget()
    first.refresh_from_db()
    assert first.status == "suspended"
    refused = api_a.get("/v1/models")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "organization_suspended"
    assert Client(HTTP_HOST="tenant-a.localhost").get("/").status_code == 403
    assert api_b.get("/v1/models").status_code == 200  # the other organization is unaffected

    [event] = _events(first, "organization.status_changed")
    assert event.actor_kind == "operator" and event.actor_label == "operator@cognitionos.example.com"
    assert event.metadata == {"from": "active", "to": "suspended", "reason": "unpaid invoices, ticket 42"}
    logged = OperatorAction.objects.get(action="organization.suspended")
    assert logged.organization_id == first.pk and logged.reason == "unpaid invoices, ticket 42"
    assert _events(second, "organization.status_changed") == []

    assert _operate(admin_client, first, "resume", reason="paid").status_code == 302
    organization_cache_forget()
    apikey_cache_forget()
    first.refresh_from_db()
    assert first.status == "active"
    assert api_a.get("/v1/models").status_code == 200
    assert OperatorAction.objects.filter(action="organization.resumed", organization=first).count() == 1


def test_an_action_without_a_reason_is_refused_and_changes_nothing(
    two_tenants: tuple[Organization, Organization], admin_client: Client
) -> None:
    first, _ = two_tenants
    response = _operate(admin_client, first, "suspend", reason="")
    assert response.status_code == 200  # the form again, with its error
    first.refresh_from_db()
    assert first.status == "active"
    assert not OperatorAction.objects.exists()


def test_changing_the_plan_moves_the_organization_and_is_audited_in_both_logs(
    two_tenants: tuple[Organization, Organization], admin_client: Client
) -> None:
    first, _ = two_tenants
    plan_make(code="bigger", name="Bigger")
    response = _operate(admin_client, first, "plan", plan="bigger", reason="sales deal 7")
    assert response.status_code == 302
    first.refresh_from_db()
    assert first.plan == Plan.objects.get(code="bigger")
    assert [e.metadata["reason"] for e in _events(first, "billing.plan_changed")] == ["operator"]
    [reasoned] = _events(first, "operator.plan_changed")
    assert reasoned.metadata == {"from": "suite", "to": "bigger", "reason": "sales deal 7"}
    assert OperatorAction.objects.get(action="organization.plan_changed").metadata == {"from": "suite", "to": "bigger"}


# --- Deployments -----------------------------------------------------------------------------------


def test_the_deployments_page_shows_the_breaker_and_resetting_it_closes_it(
    operator: User, admin_client: Client
) -> None:
    operator_breaker_open(
        provider="simulator", model="simulated-pro", actor=operator_principal(operator), reason="incident"
    )
    page = admin_client.get(_url("admin:ops_deployments")).content.decode()
    row = re.search(r"<tr>\s*<td>simulator</td><td>simulated-pro</td>(?:(?!</tr>).)*</tr>", page, re.S)
    assert row is not None and "<td>open</td>" in row.group(0)
    buttons = re.findall(r"<button [^>]*aria-label=\"([^\"]+)\"", page)
    assert "Reset breaker of simulator/simulated-pro" in buttons and all(buttons)

    response = admin_client.post(
        _url("admin:ops_deployments"),
        {"provider": "simulator", "model": "simulated-pro", "operation": "reset", "reason": "recovered"},
    )
    assert response.status_code == 302
    assert breaker_state("simulator", "simulated-pro") == "closed"
    assert OperatorAction.objects.filter(action="deployment.breaker_reset", target="simulator/simulated-pro").exists()


# --- Jobs and runs ---------------------------------------------------------------------------------


def test_jobs_are_listed_for_the_chosen_organization_only_and_requeue_and_cancel_are_audited(
    two_tenants: tuple[Organization, Organization], admin_client: Client
) -> None:
    first, second = two_tenants
    with schema_context(first.schema_name):
        failed = _job("failed", error_class="timeout")
        waiting = _job("queued")
    with schema_context(second.schema_name):
        theirs = _job("failed")

    assert "choose the organization first" in admin_client.get(_url("admin:ops_work")).content.decode()
    page = admin_client.get(_url("admin:ops_work"), {"organization": first.slug, "kind": "job"}).content.decode()
    assert str(failed.pk) in page and str(waiting.pk) in page and str(theirs.pk) not in page
    assert f'aria-label="Requeue job {failed.pk}"' in page and f'aria-label="Cancel job {waiting.pk}"' in page
    only_failed = admin_client.get(
        _url("admin:ops_work"), {"organization": first.slug, "kind": "job", "status": "failed"}
    ).content.decode()
    assert str(failed.pk) in only_failed and str(waiting.pk) not in only_failed

    def act(item: uuid.UUID, operation: str) -> None:
        response = admin_client.post(
            _url("admin:ops_work"),
            {"organization": first.slug, "item": str(item), "operation": operation, "reason": "customer asked"},
        )
        assert response.status_code == 302

    act(failed.pk, "requeue")
    act(waiting.pk, "cancel")
    with schema_context(first.schema_name):
        failed.refresh_from_db()
        waiting.refresh_from_db()
    assert failed.status == "queued" and failed.attempts == 0 and failed.error_class == ""
    assert waiting.status == "cancelled"
    assert [e.metadata for e in _events(first, "job.requeued")] == [{"from": "failed", "reason": "customer asked"}]
    assert len(_events(first, "job.cancelled")) == 1
    assert set(OperatorAction.objects.values_list("action", "organization_slug")) == {
        ("job.requeued", first.slug),
        ("job.cancelled", first.slug),
    }
    # A job id of another organization is not found through this one.
    act(theirs.pk, "requeue")
    with schema_context(second.schema_name):
        theirs.refresh_from_db()
    assert theirs.status == "failed"


# --- Support access --------------------------------------------------------------------------------


def test_support_access_lets_the_operator_read_one_portal_until_it_expires(
    two_tenants: tuple[Organization, Organization], operator: User, admin_client: Client
) -> None:
    first, second = two_tenants
    portal_a = _signed_in(operator, host="tenant-a.localhost")
    portal_b = _signed_in(operator, host="tenant-b.localhost")
    assert portal_a.get("/jobs/").status_code == 403  # no grant: nothing

    response = _operate(admin_client, first, "support", duration_minutes="60", reason="ticket 99: jobs stuck")
    assert response.status_code == 302
    grant = SupportAccessGrant.objects.get(operator=operator, organization=first)
    assert dt.timedelta(minutes=59) < grant.expires_at - timezone.now() <= dt.timedelta(minutes=60)
    [granted] = _events(first, "support_access.granted")  # what the owners see in their audit log
    assert granted.metadata["operator"] == operator.email and granted.metadata["reason"] == "ticket 99: jobs stuck"

    assert portal_a.get("/jobs/").status_code == 200
    assert portal_a.get("/jobs/").status_code == 200
    assert len(_events(first, "support_access.used")) == 1  # the first use, once
    assert portal_a.get("/keys/").status_code == 403  # read-only: the Viewer role
    home = portal_a.get("/")
    assert home.status_code == 200 and "support access" in home.content.decode()
    assert portal_a.get("/members/").status_code == 200
    assert portal_b.get("/").status_code == 403
    assert portal_b.get("/jobs/").status_code == 403  # another organization: unaffected
    assert _events(second, "support_access.granted") == []

    # A session that did not pass the second factor gets nothing, grant or not.
    assert _signed_in(operator, host="tenant-a.localhost", used_factor=False).get("/jobs/").status_code == 403

    SupportAccessGrant.objects.filter(pk=grant.pk).update(
        created_at=timezone.now() - dt.timedelta(hours=2), expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    assert portal_a.get("/jobs/").status_code == 403  # expired by itself: no sweeper involved


def test_support_access_is_bounded_to_eight_hours(
    two_tenants: tuple[Organization, Organization], admin_client: Client
) -> None:
    first, _ = two_tenants
    response = _operate(admin_client, first, "support", duration_minutes="600", reason="long")
    assert response.status_code == 200  # not a choice: the form again
    assert not SupportAccessGrant.objects.exists()


def test_scheduling_a_deletion_and_cancelling_it_through_the_admin(
    two_tenants: tuple[Organization, Organization], admin_client: Client
) -> None:
    deletion = pytest.importorskip("apps.ops.deletion")
    first, second = two_tenants
    response = _operate(admin_client, first, "delete", grace_days="14", reason="customer asked, ticket 5")
    assert response.status_code == 302
    first.refresh_from_db()
    assert first.status == "deleting" and first.deletion_due_at is not None
    assert dt.timedelta(days=13) < first.deletion_due_at - timezone.now() <= dt.timedelta(days=14)
    assert [e.metadata["reason"] for e in _events(first, deletion.SCHEDULED)] == ["customer asked, ticket 5"]
    assert OperatorAction.objects.get(action="organization.deletion_scheduled").organization_id == first.pk

    page = admin_client.get(_url("admin:tenants_organization_change", first.pk)).content.decode()
    assert "Cancel scheduled deletion" in page and "Suspend organization" not in page
    assert _operate(admin_client, first, "cancel-deletion", reason="changed their mind").status_code == 302
    restored = Organization.objects.get(pk=first.pk)
    assert restored.status == "active" and restored.deletion_due_at is None
    assert OperatorAction.objects.filter(action="organization.deletion_cancelled", organization=first).exists()
    second.refresh_from_db()
    assert second.status == "active"
