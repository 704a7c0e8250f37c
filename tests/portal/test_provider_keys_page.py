"""The portal's Provider keys page: add, replace, remove and test the organization's own keys
against the suite's fake provider; the key never appears in a response, the audit log or the logs;
bounds at the field; per role and per organization."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.llm.models import ProviderCredential, UsageAttempt
from apps.llm.platform.selectors import catalog_forget
from apps.llm.services import (
    KEY_CHECKS_PER_MINUTE,
    provider_credential_set,
    provider_own_keys,
    provider_own_keys_forget,
)
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from cognitionos.redis import redis_client
from tests.factories import TEST_ACTOR, member_make
from tests.portal.conftest import ClientFor
from tests.support.fake_provider import FakeProvider
from tests.support.processes import free_port

OPENAI_KEY = "sk-proj-portal-Very-Secret-Value-9f3e7a1b"
NEW_OPENAI_KEY = "sk-proj-portal-Rotated-Secret-Value-4c2d"
COMPATIBLE_KEY = "local-server-Secret-Token-5e6f"


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeProvider]:
    with FakeProvider() as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeProvider, settings: Any) -> Iterator[FakeProvider]:
    fake_server.reset()
    settings.OPENAI_API_KEY = "sk-test-platform"
    settings.OPENAI_BASE_URL = fake_server.openai_base_url
    settings.ANTHROPIC_API_KEY = "sk-ant-test-platform"
    settings.ANTHROPIC_BASE_URL = fake_server.anthropic_base_url
    catalog_forget()
    provider_own_keys_forget()
    _forget_key_checks()
    yield fake_server
    provider_own_keys_forget()
    _forget_key_checks()


def _forget_key_checks() -> None:
    """The test calls' per-minute counters live in the shared Redis: each test starts with none."""
    client = redis_client()
    for key in client.scan_iter(match="llm:keytest:*"):
        client.delete(key)


def signed_in(client_for: ClientFor, organization: Organization, role: str) -> tuple[Client, User]:
    user = member_make(organization=organization, role=role)
    client = client_for(f"{organization.slug}.localhost")
    client.force_login(user)
    return client, user


def audit_text(organization: Organization) -> str:
    with organization_schema(organization):
        rows = AuditEvent.objects.filter(action__startswith="provider_credential.").values()
        return json.dumps([{**row} for row in rows], default=str)


def test_an_owner_adds_tests_replaces_and_removes_a_key_that_is_never_shown(
    two_tenants: tuple[Organization, Organization],
    client_for: ClientFor,
    fake: FakeProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, "owner")
    bodies: list[str] = []

    empty = client.get("/settings/providers/")
    assert empty.status_code == 200
    html = empty.content.decode()
    bodies.append(html)
    assert "No provider keys yet" in html and 'type="password"' in html
    assert '<label for="id_api_key">API key</label>' in html

    added = client.post("/settings/providers/", {"provider": "openai", "api_key": OPENAI_KEY}, follow=True)
    assert added.status_code == 200
    html = added.content.decode()
    bodies.append(html)
    assert "OpenAI key saved" in html and "…1a1b" not in html and f"…{OPENAI_KEY[-4:]}" in html
    assert provider_own_keys(organization=organization)["openai"] == OPENAI_KEY
    with organization_schema(organization):
        credential = ProviderCredential.objects.get(provider="openai")
    assert OPENAI_KEY.encode() not in bytes(credential.ciphertext)

    # The test call: one real call to the (fake) provider with the organization's key; no ledger row.
    tested = client.post("/settings/providers/openai/test/", HTTP_HX_REQUEST="true")
    bodies.append(tested.content.decode())
    assert tested.status_code == 200 and "Works" in tested.content.decode()
    assert fake.calls[-1].status == 200 and fake.calls[-1].body["max_completion_tokens"] == 1
    with organization_schema(organization):
        assert not UsageAttempt.objects.exists()
    fake.fail_next(1, status=401, error_type="invalid_request_error", message="Incorrect API key provided")
    refused = client.post("/settings/providers/openai/test/")  # without HTMX: the whole page
    bodies.append(refused.content.decode())
    assert refused.status_code == 200 and "Refused: invalid key" in refused.content.decode()
    fake.fail_next(1, status=503)
    down = client.post("/settings/providers/openai/test/", HTTP_HX_REQUEST="true")
    assert "Provider unreachable" in down.content.decode()

    # Replace (rotate): the provider's key is the new one at once.
    client.post("/settings/providers/", {"provider": "openai", "api_key": NEW_OPENAI_KEY})
    listed = client.get("/settings/providers/").content.decode()
    bodies.append(listed)
    assert f"…{NEW_OPENAI_KEY[-4:]}" in listed and f"…{OPENAI_KEY[-4:]}" not in listed
    assert provider_own_keys(organization=organization)["openai"] == NEW_OPENAI_KEY

    removed = client.post("/settings/providers/openai/remove/", follow=True)
    bodies.append(removed.content.decode())
    assert removed.status_code == 200 and "OpenAI key removed" in removed.content.decode()
    assert provider_own_keys(organization=organization) == {}

    audit = audit_text(organization)
    for action in ("provider_credential.set", "provider_credential.tested", "provider_credential.deleted"):
        assert action in audit
    assert '"replaced": true' in audit and '"result": "refused: invalid key"' in audit
    for secret in (OPENAI_KEY, NEW_OPENAI_KEY):
        assert secret not in audit
        assert all(secret not in body for body in bodies)
        assert secret not in caplog.text


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"provider": "openai", "api_key": "short"}, "api_key", "at least 8"),
        ({"provider": "openai", "api_key": "x" * 501}, "api_key", "at most 500"),
        ({"provider": "openai", "api_key": "has a space inside"}, "api_key", "no spaces"),
        ({"provider": "mistral", "api_key": COMPATIBLE_KEY}, "provider", "valid choice"),
        ({"provider": "openai_compatible", "api_key": COMPATIBLE_KEY}, "base_url", "needs its server"),
        ({"provider": "openai", "api_key": COMPATIBLE_KEY, "base_url": "https://a.example"}, "base_url", "Only"),
        (
            {"provider": "openai_compatible", "api_key": COMPATIBLE_KEY, "base_url": "ftp://files.example"},
            "base_url",
            "https://",
        ),
        (
            {"provider": "openai_compatible", "api_key": COMPATIBLE_KEY, "base_url": "https://u:p@llm.example"},
            "base_url",
            "credentials",
        ),
        (
            {"provider": "openai_compatible", "api_key": COMPATIBLE_KEY, "base_url": "https://llm.example/v1?key=x"},
            "base_url",
            "?query",
        ),
    ],
)
def test_bad_keys_are_answered_400_at_their_field_and_never_rendered_back(
    two_tenants: tuple[Organization, Organization],
    client_for: ClientFor,
    data: dict[str, str],
    field: str,
    message: str,
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, "admin")
    answer = client.post("/settings/providers/", data)
    assert answer.status_code == 400
    html = answer.content.decode()
    error = html.split(f'id="id_{field}_error">', 1)[1].split("</p>", 1)[0]
    assert message in error
    assert data["api_key"] not in html  # the password field is not filled back in
    with organization_schema(organization):
        assert not ProviderCredential.objects.exists()


def test_a_compatible_server_on_a_private_address_is_refused_unless_allowed(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, fake: FakeProvider, settings: Any
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, "owner")
    data = {"provider": "openai_compatible", "api_key": COMPATIBLE_KEY, "base_url": fake.openai_base_url}
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = False
    refused = client.post("/settings/providers/", data)
    assert refused.status_code == 400 and "forbidden address" in refused.content.decode()
    for url in ("http://169.254.169.254/latest/", "http://[::1]:8080/v1", "http://10.0.0.7/v1"):
        assert client.post("/settings/providers/", {**data, "base_url": url}).status_code == 400

    # The tests' setting allows loopback: the fake server is the compatible server; the test works.
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = True
    saved = client.post("/settings/providers/", data, follow=True)
    html = saved.content.decode()
    assert saved.status_code == 200 and fake.openai_base_url in html and COMPATIBLE_KEY not in html
    tested = client.post("/settings/providers/openai_compatible/test/", HTTP_HX_REQUEST="true")
    assert "Works" in tested.content.decode()
    # The compatible key is named by its server: only the catalog's models at that URL get it.
    assert set(provider_own_keys(organization=organization)) == {f"openai_compatible {fake.openai_base_url}"}
    closed = f"http://127.0.0.1:{free_port()}/v1"
    provider_credential_set(
        organization=organization, provider="openai_compatible", api_key=COMPATIBLE_KEY, base_url=closed,
        actor=TEST_ACTOR,
    )  # fmt: skip
    gone = client.post("/settings/providers/openai_compatible/test/", HTTP_HX_REQUEST="true")
    assert "Provider unreachable" in gone.content.decode()


@pytest.mark.parametrize(("role", "allowed"), [("owner", True), ("admin", True), ("developer", False),
                                               ("billing", False), ("viewer", False)])  # fmt: skip
def test_only_security_managers_open_or_change_provider_keys(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, fake: FakeProvider, role: str, allowed: bool
) -> None:
    organization = two_tenants[0]
    provider_credential_set(
        organization=organization, provider="anthropic", api_key="sk-ant-own-12345678", actor=TEST_ACTOR
    )
    client, _ = signed_in(client_for, organization, role)
    home = client.get("/").content.decode()
    assert ('href="/settings/providers/"' in home) is allowed  # not offered in the navigation
    page = client.get("/settings/providers/")
    tested = client.post("/settings/providers/anthropic/test/")
    added = client.post("/settings/providers/", {"provider": "openai", "api_key": OPENAI_KEY})
    removed = client.post("/settings/providers/anthropic/remove/")
    if allowed:
        assert page.status_code == 200 and "…5678" in page.content.decode()
        assert tested.status_code == 200 and "Works" in tested.content.decode()
        assert added.status_code == 302 and removed.status_code == 302
    else:
        assert {page.status_code, tested.status_code, added.status_code, removed.status_code} == {403}
        assert set(provider_own_keys(organization=organization)) == {"anthropic"}


def test_another_organizations_keys_are_neither_shown_tested_nor_removed(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, fake: FakeProvider
) -> None:
    organization_a, organization_b = two_tenants
    provider_credential_set(organization=organization_a, provider="openai", api_key=OPENAI_KEY, actor=TEST_ACTOR)
    client_b, _ = signed_in(client_for, organization_b, "owner")
    page_b = client_b.get("/settings/providers/").content.decode()
    assert "No provider keys yet" in page_b and OPENAI_KEY[-4:] not in page_b
    assert client_b.post("/settings/providers/openai/test/").status_code == 404
    assert client_b.post("/settings/providers/openai/remove/").status_code == 404
    assert client_b.post("/settings/providers/simulator/test/").status_code == 404
    provider_own_keys_forget()
    assert provider_own_keys(organization=organization_a) == {"openai": OPENAI_KEY}


def test_key_tests_are_bounded_per_organization_and_minute(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, fake: FakeProvider
) -> None:
    organization = two_tenants[0]
    provider_credential_set(organization=organization, provider="openai", api_key=OPENAI_KEY, actor=TEST_ACTOR)
    client, _ = signed_in(client_for, organization, "owner")
    for _ in range(KEY_CHECKS_PER_MINUTE):
        assert "Works" in client.post("/settings/providers/openai/test/", HTTP_HX_REQUEST="true").content.decode()
    calls = len(fake.calls)
    limited = client.post("/settings/providers/openai/test/")
    assert limited.status_code == 429 and "Too many tests" in limited.content.decode()
    assert "Too many tests" in client.post("/settings/providers/openai/test/", HTTP_HX_REQUEST="true").content.decode()
    assert len(fake.calls) == calls  # no provider call once limited
