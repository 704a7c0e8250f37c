"""API keys with scopes: what a key may do, how it is created, listed and revoked, and its limits."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.accounts.services import user_ensure
from apps.apikeys import selectors
from apps.apikeys.keys import expiry_parse
from apps.apikeys.models import ApiKey
from apps.apikeys.selectors import apikey_cache_forget, apikey_resolve
from apps.apikeys.services import ApiKeyInvalid, ApiKeyRefused, apikey_create, apikey_revoke_for_member
from apps.apikeys.usage import apikey_last_used_flush
from apps.audit.models import AuditEvent
from apps.rbac.models import Membership
from apps.rbac.permissions import EVERY
from apps.rbac.services import membership_create
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(autouse=True)
def _fresh_keys(db: None) -> Iterator[None]:
    apikey_cache_forget()
    apikey_last_used_flush()  # uses noted by earlier tests (their keys are gone: no row changes)
    yield
    apikey_cache_forget()


def key_client(key: str) -> APIClient:
    client = APIClient(HTTP_HOST="localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def new_key(organization: Organization, *scopes: str, **kwargs: object) -> str:
    return apikey_create(organization=organization, name="t", actor=TEST_ACTOR, scopes=scopes, **kwargs).key  # type: ignore[arg-type]


def member(organization: Organization, email: str, role: str) -> User:
    user = user_ensure(email=email)
    membership_create(user=user, organization=organization, role=role, actor=TEST_ACTOR)
    return user


def test_a_key_acts_with_its_scopes_expanded(two_tenants: tuple[Organization, Organization]) -> None:
    organization = two_tenants[0]
    narrow = apikey_resolve(new_key(organization, "jobs:read", "llm:invoke"))
    wide = apikey_resolve(new_key(organization, "admin"))
    assert narrow is not None and narrow[1].permissions == frozenset({"jobs:read", "llm:invoke"})
    assert wide is not None and wide[1].permissions == frozenset(permission.value for permission in EVERY)


def test_keys_made_without_scopes_are_admin_as_before(two_tenants: tuple[Organization, Organization]) -> None:
    issued = apikey_create(organization=two_tenants[0], name="old style", actor=TEST_ACTOR)
    assert issued.api_key.scopes == ["admin"]


def test_the_database_refuses_an_unknown_or_empty_scope_list(two_tenants: tuple[Organization, Organization]) -> None:
    api_key = ApiKey.objects.get(pk=apikey_create(organization=two_tenants[0], name="x", actor=TEST_ACTOR).api_key.pk)
    for scopes in (["jobs:read", "jobs:delete-everything"], []):
        with pytest.raises(IntegrityError), transaction.atomic():
            ApiKey.objects.filter(pk=api_key.pk).update(scopes=scopes)


def test_a_jobs_read_key_gets_403_on_chat_completions_in_openais_shape(
    two_tenants: tuple[Organization, Organization],
) -> None:
    client = key_client(new_key(two_tenants[0], "jobs:read"))
    for path in ("/v1/chat/completions", "/v1/embeddings"):
        refused = client.post(path, CHAT, format="json")
        assert refused.status_code == 403, refused.content
        assert refused.json() == {
            "error": {
                "message": "this API key lacks the `llm:invoke` scope",
                "type": "permission_error",
                "code": "insufficient_scope",
                "param": None,
            }
        }
    assert client.get("/v1/models").status_code == 403


def test_a_jobs_read_key_gets_403_on_messages_in_anthropics_shape(
    two_tenants: tuple[Organization, Organization],
) -> None:
    client = APIClient(HTTP_HOST="localhost")
    client.credentials(HTTP_X_API_KEY=new_key(two_tenants[0], "jobs:read"))
    refused = client.post("/v1/messages", {**CHAT, "max_tokens": 5}, format="json")
    assert refused.status_code == 403
    assert refused.json()["type"] == "error" and refused.json()["error"]["type"] == "permission_error"


def test_an_llm_invoke_key_passes_the_scope_check(two_tenants: tuple[Organization, Organization]) -> None:
    assert key_client(new_key(two_tenants[0], "llm:invoke")).get("/v1/models").status_code == 200


def test_a_jobs_read_key_reads_jobs_but_gets_403_setting_a_budget(
    two_tenants: tuple[Organization, Organization],
) -> None:
    client = key_client(new_key(two_tenants[0], "jobs:read"))
    assert client.get("/api/v1/jobs").status_code == 200
    refused = client.post(
        "/api/v1/budgets", {"scope": "organization", "period": "day", "limit_usd": "1"}, format="json"
    )
    assert refused.status_code == 403, refused.content
    assert key_client(new_key(two_tenants[0], "jobs:read")).get("/api/v1/keys").status_code == 403


def test_an_expired_key_is_refused_and_the_cache_never_outlives_the_expiry(
    two_tenants: tuple[Organization, Organization],
) -> None:
    organization = two_tenants[0]
    expires_at = timezone.now() + dt.timedelta(seconds=1)
    key = new_key(organization, "llm:invoke", expires_at=expires_at)
    with override_settings(TENANT_RESOLUTION_CACHE_SECONDS=60):
        assert apikey_resolve(key) is not None
        cached_until = selectors._KEY_CACHE[key][0]
        assert cached_until <= time.monotonic() + 1
        # The cache ends a little before the expiry (by the lookup's own duration): wait for both.
        wait = max(cached_until - time.monotonic(), (expires_at - timezone.now()).total_seconds(), 0.0)
        time.sleep(wait + 0.05)
        assert apikey_resolve(key) is None
        with CaptureQueriesContext(connection) as queries:  # remembered as a miss, like a revoked key
            assert key_client(key).get("/v1/models").status_code == 401
        assert not [q for q in queries.captured_queries if "apikeys_apikey" in q["sql"]]


def test_creation_refuses_an_expiry_in_the_past(two_tenants: tuple[Organization, Organization]) -> None:
    with pytest.raises(ApiKeyInvalid):
        new_key(two_tenants[0], "jobs:read", expires_at=timezone.now() - dt.timedelta(seconds=1))


def test_last_used_is_written_in_batches_not_per_request(two_tenants: tuple[Organization, Organization]) -> None:
    organization = two_tenants[0]
    issued = apikey_create(organization=organization, name="busy", actor=TEST_ACTOR, scopes=["llm:invoke"])
    client = key_client(issued.key)
    with CaptureQueriesContext(connection) as queries:
        for _ in range(20):
            assert client.get("/v1/models").status_code == 200
    writes = [q["sql"] for q in queries.captured_queries if "apikeys_apikey" in q["sql"] and "UPDATE" in q["sql"]]
    assert writes == []
    issued.api_key.refresh_from_db()
    assert issued.api_key.last_used_at is None
    before = timezone.now()
    assert apikey_last_used_flush() == 1
    last_used_at = ApiKey.objects.get(pk=issued.api_key.pk).last_used_at
    assert last_used_at is not None and last_used_at >= before - dt.timedelta(seconds=5)
    assert apikey_last_used_flush() == 0


def test_last_used_never_goes_backwards(two_tenants: tuple[Organization, Organization]) -> None:
    issued = apikey_create(organization=two_tenants[0], name="k", actor=TEST_ACTOR, scopes=["llm:invoke"])
    later = timezone.now() + dt.timedelta(hours=1)
    ApiKey.objects.filter(pk=issued.api_key.pk).update(last_used_at=later)  # another process wrote later
    assert apikey_resolve(issued.key) is not None
    apikey_last_used_flush()
    issued.api_key.refresh_from_db()
    assert issued.api_key.last_used_at == later


def test_nobody_grants_a_scope_above_their_own(two_tenants: tuple[Organization, Organization]) -> None:
    organization = two_tenants[0]
    creator = Principal(kind="user", id="1", label="dev", permissions=frozenset({"jobs:read", "keys:manage"}))
    with pytest.raises(ApiKeyRefused):
        apikey_create(organization=organization, name="x", actor=creator, scopes=["llm:invoke"])
    with pytest.raises(ApiKeyRefused):
        apikey_create(organization=organization, name="x", actor=creator, scopes=["admin"])
    unresolved = Principal(kind="user", id="1", label="someone")
    with pytest.raises(ApiKeyRefused):
        apikey_create(organization=organization, name="x", actor=unresolved, scopes=["jobs:read"])
    assert apikey_create(organization=organization, name="x", actor=creator, scopes=["jobs:read"]).api_key.scopes == [
        "jobs:read"
    ]


def test_keys_are_created_listed_and_revoked_through_the_api(two_tenants: tuple[Organization, Organization]) -> None:
    organization = two_tenants[0]
    manager = key_client(new_key(organization, "keys:manage", "jobs:read", "llm:invoke"))
    created = manager.post(
        "/api/v1/keys",
        {"name": "ci", "scopes": ["llm:invoke"], "expires_at": "2099-01-01T00:00:00Z"},
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["key"].startswith(body["prefix"]) and body["scopes"] == ["llm:invoke"] and body["user"] is None
    assert body["expires_at"] == "2099-01-01T00:00:00Z"
    assert key_client(body["key"]).get("/v1/models").status_code == 200

    listed = manager.get("/api/v1/keys")
    assert listed.status_code == 200
    rows = listed.json()["results"]
    row = next(r for r in rows if r["id"] == body["id"])
    assert set(row) == {
        "id", "name", "prefix", "scopes", "user", "created_by", "created_at", "last_used_at", "expires_at", "revoked_at"
    }  # fmt: skip
    assert body["key"] not in listed.content.decode() and "secret" not in listed.content.decode()

    revoked = manager.post(f"/api/v1/keys/{body['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert manager.post(f"/api/v1/keys/{body['id']}/revoke").status_code == 200  # idempotent
    apikey_cache_forget()  # what the revocation does on commit (the test's transaction never commits)
    assert key_client(body["key"]).get("/v1/models").status_code == 401
    with organization_schema(organization):
        actions = list(
            AuditEvent.objects.filter(target_id=str(body["id"]), target_type="apikeys.ApiKey").values_list(
                "action", flat=True
            )
        )
    assert sorted(actions) == ["apikey.created", "apikey.revoked"]


def test_the_api_refuses_scopes_above_the_callers_and_unknown_scopes(
    two_tenants: tuple[Organization, Organization],
) -> None:
    manager = key_client(new_key(two_tenants[0], "keys:manage", "jobs:read"))
    above = manager.post("/api/v1/keys", {"name": "x", "scopes": ["llm:invoke"]}, format="json")
    assert above.status_code == 403 and above.json()["error"]["code"] == "scope_above_own"
    unknown = manager.post("/api/v1/keys", {"name": "x", "scopes": ["jobs:delete"]}, format="json")
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "scopes"
    bind = manager.post("/api/v1/keys", {"name": "x", "scopes": ["jobs:read"], "bind_to_me": True}, format="json")
    assert bind.status_code == 400 and bind.json()["error"]["param"] == "bind_to_me"


def test_a_replayed_create_returns_the_same_key_without_its_secret(
    two_tenants: tuple[Organization, Organization],
) -> None:
    manager = key_client(new_key(two_tenants[0], "admin"))
    payload = {"name": "once", "scopes": ["jobs:read"]}
    first = manager.post("/api/v1/keys", payload, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = manager.post("/api/v1/keys", payload, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again.json()["key"] is None
    assert again["Idempotent-Replayed"] == "true"
    assert ApiKey.objects.filter(organization=two_tenants[0], name="once").count() == 1


def test_a_tenant_can_neither_list_nor_revoke_another_tenants_keys(
    two_tenants: tuple[Organization, Organization],
) -> None:
    organization_a, organization_b = two_tenants
    b_issued = apikey_create(organization=organization_b, name="b's", actor=TEST_ACTOR, scopes=["llm:invoke"])
    manager_a = key_client(new_key(organization_a, "admin"))
    listed = manager_a.get("/api/v1/keys").json()["results"]
    assert b_issued.api_key.pk not in {row["id"] for row in listed}
    assert all(row["name"] != "b's" for row in listed)
    assert manager_a.post(f"/api/v1/keys/{b_issued.api_key.pk}/revoke").status_code == 404
    assert key_client(b_issued.key).get("/v1/models").status_code == 200
    b_issued.api_key.refresh_from_db()
    assert b_issued.api_key.revoked_at is None


def test_a_member_binds_a_key_to_themselves_through_the_api(two_tenants: tuple[Organization, Organization]) -> None:
    organization = two_tenants[0]
    dev = member(organization, "dev-binds@example.com", "developer")
    client = APIClient(HTTP_HOST=f"{organization.slug}.localhost")
    client.force_login(dev)
    created = client.post("/api/v1/keys", {"name": "mine", "scopes": ["llm:invoke"], "bind_to_me": True}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["user"] == dev.email
    above = client.post("/api/v1/keys", {"name": "more", "scopes": ["billing:manage"]}, format="json")
    assert above.status_code == 403


def test_a_bound_key_is_revoked_when_its_user_leaves(two_tenants: tuple[Organization, Organization]) -> None:
    organization = two_tenants[0]
    dev = member(organization, "dev-leaves@example.com", "developer")
    issued = apikey_create(organization=organization, name="d", actor=TEST_ACTOR, scopes=["llm:invoke"], user=dev)
    assert apikey_resolve(issued.key) is not None
    Membership.objects.filter(user=dev, organization=organization).delete()
    apikey_cache_forget()  # as the resolver's cache expires (TENANT_RESOLUTION_CACHE_SECONDS)
    assert apikey_resolve(issued.key) is None
    issued.api_key.refresh_from_db()
    assert issued.api_key.revoked_at is not None
    with organization_schema(organization):
        event = AuditEvent.objects.get(action="apikey.revoked", target_id=str(issued.api_key.pk))
    assert event.actor_kind == "system" and "left the organization" in event.metadata["reason"]


def test_a_bound_key_is_revoked_when_its_user_loses_a_scope(two_tenants: tuple[Organization, Organization]) -> None:
    organization = two_tenants[0]
    dev = member(organization, "dev-demoted@example.com", "developer")
    invoke = apikey_create(organization=organization, name="i", actor=TEST_ACTOR, scopes=["llm:invoke"], user=dev)
    read = apikey_create(organization=organization, name="r", actor=TEST_ACTOR, scopes=["jobs:read"], user=dev)
    Membership.objects.filter(user=dev, organization=organization).update(role="viewer")
    assert apikey_revoke_for_member(organization_id=organization.pk, user_id=dev.pk) == 1
    invoke.api_key.refresh_from_db()
    read.api_key.refresh_from_db()
    assert invoke.api_key.revoked_at is not None and read.api_key.revoked_at is None
    assert apikey_resolve(read.key) is not None


def test_a_key_cant_be_bound_to_a_non_member_or_beyond_their_role(
    two_tenants: tuple[Organization, Organization],
) -> None:
    organization_a, organization_b = two_tenants
    viewer = member(organization_a, "viewer-bound@example.com", "viewer")
    with pytest.raises(ApiKeyInvalid):
        new_key(organization_b, "jobs:read", user=viewer)
    with pytest.raises(ApiKeyInvalid):
        new_key(organization_a, "llm:invoke", user=viewer)


def test_expiry_parse_reads_durations_and_iso_dates() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert expiry_parse("30d", now=now) == now + dt.timedelta(days=30)
    assert expiry_parse("12h", now=now) == now + dt.timedelta(hours=12)
    assert expiry_parse("2027-03-01") == dt.datetime(2027, 3, 1, tzinfo=dt.UTC)
    assert expiry_parse("2027-03-01T10:00:00+02:00").utcoffset() == dt.timedelta(hours=2)
    with pytest.raises(ValueError, match="neither a duration"):
        expiry_parse("soon")


def test_a_key_sent_to_an_organizations_portal_host_is_told_to_use_the_api_host(
    two_tenants: tuple[Organization, Organization],
) -> None:
    organization = two_tenants[0]
    key = new_key(organization, "jobs:read")
    on_portal_host = APIClient(HTTP_HOST=f"{organization.slug}.localhost")
    on_portal_host.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    refused = on_portal_host.get("/api/v1/jobs")
    assert refused.status_code == 401
    assert "API host" in refused.json()["error"]["message"]
    # The same key on the API host works.
    assert key_client(key).get("/api/v1/jobs").status_code == 200
