"""The portal's API keys page: list, create (the key shown once, never above one's own role),
revoke (and the gateway refuses the key at once), per organization and per role."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import User
from apps.apikeys.models import ApiKey
from apps.apikeys.selectors import apikey_cache_forget
from apps.apikeys.services import apikey_create
from apps.audit.models import AuditEvent
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR, member_make
from tests.portal.conftest import ClientFor

CHAT = {"model": "simulated-mini", "messages": [{"role": "user", "content": "hi"}]}
KEY = re.compile(r"cos_[A-Za-z0-9]+_[A-Za-z0-9_-]+")


@pytest.fixture(autouse=True)
def _fresh_keys(db: None) -> Iterator[None]:
    apikey_cache_forget()
    yield
    apikey_cache_forget()


def signed_in(client_for: ClientFor, organization: Organization, role: str) -> tuple[Client, User]:
    user = member_make(organization=organization, role=role)
    client = client_for(f"{organization.slug}.localhost")
    client.force_login(user)
    return client, user


def shown_key(html: str) -> str:
    found = re.search(r'id="new-key"[^>]*value="(cos_[^"]+)"', html)
    assert found, "the new key is not on the page"
    return found.group(1)


def gateway(key: str) -> APIClient:
    client = APIClient(HTTP_HOST="localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_a_developer_creates_a_key_sees_it_once_and_it_calls_the_gateway(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, user = signed_in(client_for, organization, "developer")
    page = client.get("/keys/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="/keys/"' in html and 'aria-current="page"' in html  # in the nav, current
    # Only the developer's own permissions are offered as scopes.
    assert 'value="llm:invoke"' in html and 'value="admin"' not in html and 'value="billing:manage"' not in html
    assert '<label for="id_name">Name</label>' in html

    created = client.post(
        "/keys/", {"name": "ci runner", "scopes": ["llm:invoke"], "expires_in": "30", "bind_to_me": "on"}
    )
    assert created.status_code == 200
    html = created.content.decode()
    key = shown_key(html)
    assert "shown only once" in html and 'api_key="' + key + '"' in html  # the SDK snippet carries it
    assert "http://localhost/v1" in html  # the base URL: the platform host
    api_key = ApiKey.objects.get(organization=organization, name="ci runner")
    assert api_key.scopes == ["llm:invoke"] and api_key.user == user and api_key.expires_at is not None
    assert api_key.created_by_label == user.email

    # The list shows the key by its prefix, never the key again.
    listed = client.get("/keys/").content.decode()
    assert "ci runner" in listed and f"cos_{api_key.prefix}_" in listed
    assert key not in listed and not KEY.search(listed.replace(f"cos_{api_key.prefix}_", ""))

    answer = gateway(key).post("/v1/chat/completions", CHAT, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["choices"][0]["message"]["content"]

    with organization_schema(organization):
        event = AuditEvent.objects.get(action="apikey.created", target_id=str(api_key.pk))
    assert event.actor_kind == "user" and event.actor_label == user.email


def test_a_scope_above_ones_own_is_refused_even_when_posted_by_hand(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, "developer")
    for scope in ("admin", "billing:manage"):
        refused = client.post("/keys/", {"name": "too much", "scopes": [scope]})
        assert refused.status_code == 400
        assert 'id="new-key"' not in refused.content.decode()
    empty = client.post("/keys/", {"name": "no scopes"})
    assert empty.status_code == 400 and b"This field is required." in empty.content
    assert not ApiKey.objects.filter(organization=organization, name__in=["too much", "no scopes"]).exists()


def test_revoking_in_the_portal_stops_the_key_at_the_gateway(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, user = signed_in(client_for, organization, "admin")
    issued = apikey_create(organization=organization, name="to revoke", actor=TEST_ACTOR, scopes=["llm:invoke"])
    assert gateway(issued.key).post("/v1/chat/completions", CHAT, format="json").status_code == 200

    revoked = client.post(f"/keys/{issued.api_key.pk}/revoke/", follow=True)
    assert revoked.status_code == 200
    assert b"Revoked to revoke" in revoked.content and b"Revoked</span>" in revoked.content
    apikey_cache_forget()  # other processes forget within TENANT_RESOLUTION_CACHE_SECONDS
    refused = gateway(issued.key).post("/v1/chat/completions", CHAT, format="json")
    assert refused.status_code == 401, refused.content
    with organization_schema(organization):
        assert AuditEvent.objects.filter(
            action="apikey.revoked", target_id=str(issued.api_key.pk), actor_label=user.email
        ).exists()
    assert client.get(f"/keys/{issued.api_key.pk}/revoke/").status_code in (403, 405)


def test_one_organizations_keys_never_show_or_revoke_in_another(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization_a, organization_b = two_tenants
    of_a = apikey_create(organization=organization_a, name="secret-of-a", actor=TEST_ACTOR, scopes=["llm:invoke"])
    client_b, _ = signed_in(client_for, organization_b, "owner")
    page_b = client_b.get("/keys/").content.decode()
    assert "secret-of-a" not in page_b and of_a.api_key.prefix not in page_b
    assert client_b.post(f"/keys/{of_a.api_key.pk}/revoke/").status_code == 404
    of_a.api_key.refresh_from_db()
    assert of_a.api_key.revoked_at is None
    # A member of B is no one on A's host.
    client_b_on_a = client_for(f"{organization_a.slug}.localhost")
    client_b_on_a.force_login(User.objects.get(pk=client_b.session["_auth_user_id"]))
    assert client_b_on_a.get("/keys/").status_code == 403


@pytest.mark.parametrize("role", ["viewer", "billing"])
def test_roles_without_keys_manage_neither_see_nor_use_the_page(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, role: str
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, role)
    home = client.get("/").content.decode()
    assert 'href="/keys/"' not in home and "API keys" not in home
    assert client.get("/keys/").status_code == 403
    assert client.post("/keys/", {"name": "sneaky", "scopes": ["jobs:read"]}).status_code == 403
    issued = apikey_create(organization=organization, name="keep", actor=TEST_ACTOR, scopes=["jobs:read"])
    assert client.post(f"/keys/{issued.api_key.pk}/revoke/").status_code == 403
    assert not ApiKey.objects.filter(name="sneaky").exists()
    issued.api_key.refresh_from_db()
    assert issued.api_key.revoked_at is None


def test_signed_out_is_sent_to_sign_in(two_tenants: tuple[Organization, Organization], client_for: ClientFor) -> None:
    answer = client_for("tenant-a.localhost").get("/keys/")
    assert answer.status_code == 302 and "/accounts/login/" in answer["Location"]


def test_the_list_shows_status_and_binding_with_queries_constant_in_the_number_of_keys(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, user = signed_in(client_for, organization, "owner")
    assert b'href="/keys/"' in client.get("/").content  # home points to the page

    def counted_page() -> tuple[int, str]:
        connection.queries_log.clear()  # a full log (9,000 queries) would make every count zero
        with CaptureQueriesContext(connection) as queries:
            html = client.get("/keys/").content.decode()
        return len(queries), html

    apikey_create(organization=organization, name="bound one", actor=TEST_ACTOR, scopes=["llm:invoke"], user=user)
    client.get("/keys/")  # warm per-process caches
    few, _ = counted_page()
    soon = timezone.now() + dt.timedelta(seconds=1)
    expiring = apikey_create(
        organization=organization, name="short lived", actor=TEST_ACTOR, scopes=["jobs:read"], expires_at=soon
    )
    for number in range(20):
        apikey_create(organization=organization, name=f"bulk {number}", actor=TEST_ACTOR, scopes=["jobs:read"])
    ApiKey.objects.filter(pk=expiring.api_key.pk).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    many, html = counted_page()
    assert many == few
    assert f"bound to {user.email}" in html and "bulk 19" in html
    row = html[html.index("short lived") :]
    assert row.index("Expired") < row.index("</tr>")


def test_sending_the_same_form_twice_creates_one_key(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, "developer")
    form = client.get("/keys/").content.decode()
    submission = re.search(r'name="submission" value="([^"]+)"', form)
    assert submission is not None
    data = {"name": "double click", "scopes": ["llm:invoke"], "submission": submission.group(1)}
    first = client.post("/keys/", data)
    assert first.status_code == 200 and 'id="new-key"' in first.content.decode()
    again = client.post("/keys/", data)  # a reload of the answer, or a second click
    assert again.status_code == 400 and b"already sent" in again.content and b'id="new-key"' not in again.content
    assert ApiKey.objects.filter(organization=organization, name="double click").count() == 1

    # A refused form may be corrected and sent again with the same value.
    refused = {"name": "corrected", "scopes": ["admin"], "submission": uuid.uuid4().hex}
    assert client.post("/keys/", refused).status_code == 400
    assert client.post("/keys/", {**refused, "scopes": ["llm:invoke"]}).status_code == 200
