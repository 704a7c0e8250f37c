"""Deleting an organization: scheduled with a grace period, cancellable, then purged — and after the
purge nothing of it remains in any schema, public table, Redis key family or cache, while the other
organization is untouched. A purge cut short after dropping the schema finishes on the next run."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from django_tenants.utils import schema_context
from rest_framework.test import APIClient

from apps.accounts.principals import Principal
from apps.apikeys.models import ApiKey
from apps.apikeys.services import apikey_create
from apps.audit.exports import organization_references
from apps.audit.models import AuditEvent
from apps.audit.services import audit_chain_pending_key, audit_record
from apps.billing.services import _stripe_customer_ensure
from apps.billing.stripe_models import StripeCustomer
from apps.ops import anomalies, deletion
from apps.ops.anomaly import ORGANIZATION_SPEND
from apps.ops.deletion import (
    DeletionRefused,
    organization_deletion_cancel,
    organization_deletion_schedule,
    organization_purge,
    organizations_deletion_due,
)
from apps.ops.models import OperatorAction
from apps.rbac.models import Role
from apps.sso.models import IdentityProvider, SsoDomain
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from cognitionos.redis import redis_client
from tests.factories import TEST_ACTOR, member_make, organization_make
from tests.support.fake_stripe import FakeStripe

OPERATOR = Principal(kind="operator", id="1", label="ops@cognitionos.example")


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    with (
        FakeStripe(webhook_secret="whsec_test_deletion") as fake,
        override_settings(
            STRIPE_SECRET_KEY="sk_test_cognitionosFakeStripeKey0001",
            STRIPE_TEST_SECRET_KEY="sk_test_cognitionosFakeStripeKey0001",
            STRIPE_WEBHOOK_SECRET="whsec_test_deletion",
            STRIPE_API_BASE=fake.api_base,
            STRIPE_MAX_NETWORK_RETRIES=0,
        ),
    ):
        fake.hold = True
        yield fake


@pytest.fixture
def doomed(db: None) -> Iterator[Organization]:
    """An organization of its own (made inside the test's transaction), with the connection on public."""
    organization = organization_make(slug="doomed-org", name="Doomed Org")
    tenant_connection().set_schema_to_public()
    yield organization
    tenant_connection().set_schema_to_public()


def _redis_seed(organization: Organization, api_key_ids: list[int]) -> list[str]:
    """One key of every tenant-scoped family, named as the code that writes it names it."""
    n, s = organization.pk, organization.schema_name
    keys = [
        f"llm:cache:{s}:abc",
        f"llm:cache-l4:{s}",
        f"llm:rl:org:{n}:req:123",
        f"llm:keytest:org:{n}:99",
        f"llm:breaker:openai:gpt-4o:org{n}",
        f"llm:breaker:openai:gpt-4o:org{n}:probe",
        f"llm:latency_ms:gpt-4o@org{n}",
        f"llm:error_rate:gpt-4o@org{n}",
        audit_chain_pending_key(n),
        f"portal:job-form:{n}:tok",
        f"portal:apikey-form:{n}:tok",
        f"portal:webhook-create:{n}:tok",
        f"rbac:invitation:resend:{n}:5",
        f"rbac:invitation:resends:{n}",
        f"sso:assertion:{n}:digest",
        f"sso:refusals:{n}:1",
        f"sso:dns-checks:{n}:1",
        f"public:cache:1:billing:meters:backoff:{n}",
        *[f"llm:rl:key:{key_id}:tok:1" for key_id in api_key_ids],
    ]
    client = redis_client()
    for key in keys:
        client.set(key, "1", ex=600)
    with schema_context(s):
        cache.set("portal-fragment", "cached for this organization", 600)  # Django's tenant-prefixed cache
    return keys


def _redis_keys_of(organization_id: int, schema: str, slug: str, key_ids: list[int]) -> list[str]:
    """Every key in the test Redis that names the organization by schema, slug or id."""
    by_id = re.compile(rf"(^|[:@])(org)?{organization_id}(:|$)")
    found = []
    for raw in redis_client().scan_iter(count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        if key.startswith("llm:rl:key:"):  # named by an API key's id, not the organization's
            hit = any(key.startswith(f"llm:rl:key:{key_id}:") for key_id in key_ids)
        else:
            hit = schema in key or slug in key or bool(by_id.search(key))
        if hit:
            found.append(key)
    return found


def _public_rows_of(organization_id: int) -> dict[str, int]:
    """Rows of every public table that refers to organizations (by foreign key, or by a column
    named like one) still naming the organization."""
    found = {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND column_name IN ('organization_id', 'tenant_id', 'subscriber_id')"
        )
        columns = set(cursor.fetchall()) | set(organization_references()) | {("tenants_organization", "id")}
        for table, column in sorted(columns):
            cursor.execute(f'SELECT count(*) FROM public."{table}" WHERE "{column}" = %s', [organization_id])
            count = cursor.fetchone()[0]
            if count:
                found[f"{table}.{column}"] = count
    return found


def _schema_exists(schema: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [schema])
        namespaces = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", [schema])
        tables = cursor.fetchone()[0]
    return bool(namespaces or tables)


# -- schedule and cancel ----------------------------------------------------------------------------


def test_scheduled_deletion_is_cancellable(doomed: Organization) -> None:
    scheduled = organization_deletion_schedule(organization=doomed, actor=OPERATOR, reason="customer asked")
    assert scheduled.status == Organization.Status.DELETING
    assert scheduled.deletion_due_at is not None
    assert abs(scheduled.deletion_due_at - (timezone.now() + dt.timedelta(days=30))) < dt.timedelta(minutes=1)
    assert doomed.pk not in organizations_deletion_due()  # not due for 30 days
    with pytest.raises(DeletionRefused) as refused:
        organization_purge(organization_id=doomed.pk)
    assert refused.value.code == "not_due"
    with pytest.raises(DeletionRefused):
        organization_deletion_schedule(organization=doomed, actor=OPERATOR, reason="again")

    kept = organization_deletion_cancel(organization=doomed, actor=OPERATOR)
    assert kept.status == Organization.Status.ACTIVE and kept.deletion_due_at is None
    assert _schema_exists(doomed.schema_name)
    with schema_context(doomed.schema_name):
        actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions[-2:] == ["organization.deletion_scheduled", "organization.deletion_cancelled"]
    with pytest.raises(DeletionRefused) as refused:
        organization_deletion_cancel(organization=doomed, actor=OPERATOR)
    assert refused.value.code == "no_deletion_scheduled"


def test_cancel_restores_a_suspended_organization_as_suspended(doomed: Organization) -> None:
    Organization.objects.filter(pk=doomed.pk).update(status=Organization.Status.SUSPENDED)
    doomed.refresh_from_db()
    organization_deletion_schedule(organization=doomed, actor=OPERATOR, reason="closing")
    assert organization_deletion_cancel(organization=doomed, actor=OPERATOR).status == Organization.Status.SUSPENDED


def test_schedule_refuses_bad_input(doomed: Organization) -> None:
    with pytest.raises(DeletionRefused):
        organization_deletion_schedule(organization=doomed, actor=OPERATOR, reason="  ")
    with pytest.raises(DeletionRefused):
        organization_deletion_schedule(organization=doomed, actor=OPERATOR, reason="x", grace_days=-1)


# -- the purge ----------------------------------------------------------------------------------------


def _populate(organization: Organization) -> None:
    """Public rows of several kinds (member, API key, SSO settings), a tenant row, Redis keys."""
    member_make(organization=organization, role=Role.ADMIN, email="someone@doomed.example.com")
    issued = apikey_create(organization=organization, name="doomed key", actor=TEST_ACTOR)
    IdentityProvider.objects.create(
        organization=organization,
        entity_id="https://idp.doomed.example.com",
        sso_url="https://idp.doomed.example.com/sso",
    )
    SsoDomain.objects.create(organization=organization, domain="doomed.example.com", verification_token="t" * 32)
    with schema_context(organization.schema_name):
        audit_record(organization=organization, actor=OPERATOR, action="something.happened")
    tenant_connection().set_schema_to_public()
    assert issued.key
    _redis_seed(organization, _api_key_ids(organization))


def _api_key_ids(organization: Organization) -> list[int]:
    return list(ApiKey.objects.filter(organization=organization).values_list("pk", flat=True))


def test_purge_leaves_nothing_of_the_organization(
    doomed: Organization,
    two_tenants: tuple[Organization, Organization],
    fake_stripe: FakeStripe,
    django_capture_on_commit_callbacks: Any,
) -> None:
    _, other = two_tenants
    _populate(doomed)
    key_ids = _api_key_ids(doomed)
    customer_id = _stripe_customer_ensure(organization=doomed)
    fake_stripe._store(
        "subscription", {"id": "sub_doomed", "object": "subscription", "customer": customer_id, "status": "active"}
    )
    # The other organization has keys of the same families, and an API key that must keep working.
    other_keys = _redis_seed(other, _api_key_ids(other))
    other_client = APIClient(HTTP_HOST="localhost")
    other_client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {apikey_create(organization=other, name='other', actor=TEST_ACTOR).key}"
    )
    tenant_connection().set_schema_to_public()
    assert _public_rows_of(doomed.pk)
    assert _redis_keys_of(doomed.pk, doomed.schema_name, doomed.slug, key_ids)
    schema, slug = doomed.schema_name, doomed.slug
    # Anomaly detection keeps organizations' spend as fields of shared hashes, not in key families.
    spend_field = f"{ORGANIZATION_SPEND}|{doomed.pk}"
    redis_client().hset(anomalies.STATE_KEY, mapping={spend_field: "{}", f"{ORGANIZATION_SPEND}|{other.pk}": "{}"})

    organization_deletion_schedule(organization=doomed, actor=OPERATOR, reason="GDPR erasure", grace_days=0)
    assert doomed.pk in organizations_deletion_due()
    with django_capture_on_commit_callbacks(execute=True):
        assert organization_purge(organization_id=doomed.pk) is True

    assert not _schema_exists(schema)
    assert _public_rows_of(doomed.pk) == {}
    assert _redis_keys_of(doomed.pk, schema, slug, key_ids) == []
    assert not redis_client().hexists(anomalies.STATE_KEY, spend_field)
    assert redis_client().hexists(anomalies.STATE_KEY, f"{ORGANIZATION_SPEND}|{other.pk}")
    assert not Organization.objects.filter(pk=doomed.pk).exists()
    assert not StripeCustomer.objects.filter(customer_id=customer_id).exists()
    # Stripe keeps the customer (its invoices), unlinked; the live subscription was cancelled.
    customer = fake_stripe.get("customer", customer_id)
    assert customer["metadata"].get("organization_id") == "" and customer["metadata"].get("djstripe_subscriber") == ""
    assert fake_stripe.get("subscription", "sub_doomed")["status"] == "canceled"
    # What remains: the operator's record, naming the slug, with no organization to point at.
    record = OperatorAction.objects.get(action="organization.purged", organization_slug=slug)
    assert record.organization_id is None and record.metadata["organization_id"] == doomed.pk
    assert record.metadata["stripe"]["subscriptions_cancelled"] == ["sub_doomed"]

    # The other organization is untouched and still works.
    assert _schema_exists(other.schema_name)
    assert all(redis_client().exists(key) for key in other_keys)
    with schema_context(other.schema_name):
        assert AuditEvent.objects.exists()
        assert cache.get("portal-fragment") == "cached for this organization"
    tenant_connection().set_schema_to_public()
    response = other_client.get("/api/v1/audit-events")
    assert response.status_code == 200, response.content

    # A second run (a redelivered task) finds nothing to do.
    assert organization_purge(organization_id=doomed.pk) is False
    assert OperatorAction.objects.filter(action="organization.purged", organization_slug=slug).count() == 1


def test_purge_interrupted_after_dropping_the_schema_finishes_on_the_next_run(
    doomed: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    _populate(doomed)
    key_ids = _api_key_ids(doomed)
    schema, slug = doomed.schema_name, doomed.slug
    organization_deletion_schedule(organization=doomed, actor=OPERATOR, reason="closing", grace_days=0)

    def crash(**_: Any) -> int:
        raise RuntimeError("worker killed")

    with monkeypatch.context() as patch:
        patch.setattr(deletion, "organization_redis_forget", crash)
        with pytest.raises(RuntimeError):
            organization_purge(organization_id=doomed.pk)
    # Cut short: the schema is gone, the organization row (which names the rest) is still there.
    assert not _schema_exists(schema)
    assert Organization.objects.get(pk=doomed.pk).status == Organization.Status.DELETING
    assert doomed.pk in organizations_deletion_due()

    assert organization_purge(organization_id=doomed.pk) is True
    assert _public_rows_of(doomed.pk) == {}
    assert _redis_keys_of(doomed.pk, schema, slug, key_ids) == []
    assert OperatorAction.objects.filter(action="organization.purged", organization_slug=slug).count() == 1


def test_beat_lists_only_due_organizations(
    doomed: Organization, two_tenants: tuple[Organization, Organization]
) -> None:
    organization_deletion_schedule(organization=doomed, actor=OPERATOR, reason="closing", grace_days=1)
    assert organizations_deletion_due() == []
    assert organizations_deletion_due(now=timezone.now() + dt.timedelta(days=1, minutes=1)) == [doomed.pk]
