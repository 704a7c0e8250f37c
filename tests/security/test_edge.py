"""Issue 9, item 8: loose ends at the edge.

- /metrics: production does not start without a strong METRICS_TOKEN; the token is compared in
  constant time.
- Unknown API keys: a miss is remembered (no query while it is), and failed attempts are limited
  per client address (429 with Retry-After in the endpoint's error shape), without locking out
  other clients, and a revoked key is refused at once.
- Development and tests: 127.0.0.1 and [::1] are the platform host, like localhost.
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.apikeys.models import ApiKey
from apps.apikeys.services import apikey_create, apikey_revoke
from apps.ops.management.commands.up import _ipv6_loopback_available, web_commands, web_hosts
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR

ROOT = Path(__file__).resolve().parents[2]


# --- /metrics -----------------------------------------------------------------------------------


def _manage(settings_module: str, *args: str, **env_overrides: str | None) -> subprocess.CompletedProcess[str]:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "DEBUG", "HTTPS", "CELERY_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE=settings_module,
        SECRET_KEY="p" + "roduction-secret-" * 4 + "9fK2",
        DATABASE_URL="postgresql://cognitionos:secret@db.internal:5432/cognitionos",
        REDIS_URL="redis://cache.internal:6379/0",
        CREDENTIALS_ENCRYPTION_KEYS="k1:" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode(),
        BASE_DOMAIN="cognitionos.example.com",
        METRICS_TOKEN="m" + "etrics-token-" * 3 + "7Qx",
    )
    for name, value in env_overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_production_refuses_to_start_without_a_strong_metrics_token() -> None:
    unset = _manage("cognitionos.settings.production", "check", "--deploy", METRICS_TOKEN=None)
    assert unset.returncode != 0
    assert "The environment variable METRICS_TOKEN is required." in unset.stderr
    short = _manage("cognitionos.settings.production", "check", "--deploy", METRICS_TOKEN="scrape")
    assert short.returncode != 0
    assert "METRICS_TOKEN must be at least 32 characters" in short.stderr


def test_metrics_token_is_compared_in_constant_time(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    token = secrets.token_urlsafe(32)
    settings.METRICS_TOKEN = token
    compared: list[tuple[bytes, bytes]] = []
    compare_digest = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr("apps.ops.metrics.hmac.compare_digest", spy)
    client = Client()
    for wrong in ("", "Bearer ", f"Bearer {token[:-1]}", f"Bearer {token}x", f"Basic {token}"):
        response = client.get("/metrics", HTTP_HOST="localhost", HTTP_AUTHORIZATION=wrong)
        assert response.status_code == 401, wrong
        assert b"cognitionos_" not in response.content
    response = client.get("/metrics", HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200 and b"# TYPE" in response.content
    assert len(compared) == 6 and compared[-1] == (f"Bearer {token}".encode(),) * 2


# --- unknown API keys ---------------------------------------------------------------------------


def _address() -> str:
    """A client address no other test (or earlier run against the same Redis) has used."""
    return f"2001:db8:{secrets.token_hex(2)}:{secrets.token_hex(2)}::7"


def _unknown_key() -> str:
    return f"cos_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def _get(path: str, key: str, address: str, **extra: Any) -> Any:
    return Client().get(path, HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {key}", REMOTE_ADDR=address, **extra)


@pytest.fixture
def limit(settings: Any) -> int:
    settings.API_KEY_FAILURES_PER_MINUTE = 20
    settings.API_KEY_MISS_CACHE_SECONDS = 30
    return 20


def test_repeated_unknown_keys_get_429_after_the_limit_and_cost_no_query_meanwhile(
    two_tenants: tuple[Organization, Organization], limit: int
) -> None:
    address = _address()
    for _ in range(limit):
        response = _get("/v1/models", _unknown_key(), address)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"

    with CaptureQueriesContext(connection) as queries:
        gateway = _get("/v1/models", _unknown_key(), address)
        api = _get("/api/v1/budgets", _unknown_key(), address)
        anthropic = Client().post(
            "/v1/messages", "{}", content_type="application/json", HTTP_HOST="localhost", REMOTE_ADDR=address,
            HTTP_X_API_KEY=_unknown_key(),
        )  # fmt: skip
    assert len(queries) == 0, [q["sql"] for q in queries.captured_queries]
    for response in (gateway, api):
        assert response.status_code == 429
        assert 1 <= int(response["Retry-After"]) <= 60
        error = response.json()["error"]
        assert (error["type"], error["code"], error["param"]) == ("rate_limit_error", "rate_limit_exceeded", None)
        assert "too many failed API key attempts" in error["message"]
    assert anthropic.status_code == 429 and anthropic["Retry-After"]
    assert anthropic.json()["type"] == "error" and anthropic.json()["error"]["type"] == "rate_limit_error"

    # Another address, and another address in the same /64 counts with the first.
    assert _get("/v1/models", _unknown_key(), _address()).status_code == 401
    assert _get("/v1/models", _unknown_key(), address.replace("::7", "::8")).status_code == 429


def test_a_valid_key_from_another_address_still_works(
    two_tenants: tuple[Organization, Organization], api_client_for: Callable[[Organization], Any], limit: int
) -> None:
    attacker = _address()
    for _ in range(limit + 3):
        _get("/v1/models", _unknown_key(), attacker)
    assert _get("/v1/models", _unknown_key(), attacker).status_code == 429

    tenant_connection().set_schema_to_public()
    key = apikey_create(organization=two_tenants[1], name="edge", actor=TEST_ACTOR).key
    assert _get("/v1/models", key, _address()).status_code == 200
    assert _get("/api/v1/budgets", key, _address()).status_code == 200


def test_forwarded_for_does_not_escape_the_limit(two_tenants: tuple[Organization, Organization], limit: int) -> None:
    address = _address()
    for n in range(limit):
        _get("/v1/models", _unknown_key(), address, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")
    assert _get("/v1/models", _unknown_key(), address, HTTP_X_FORWARDED_FOR="198.51.100.250").status_code == 429


def test_behind_a_counted_proxy_the_address_it_appended_is_the_client(
    two_tenants: tuple[Organization, Organization], limit: int, settings: Any
) -> None:
    settings.TRUSTED_PROXY_COUNT = 1
    proxy, client, other = _address(), _address(), _address()
    for n in range(limit):  # what the client put in front of the proxy's entry is ignored
        _get("/v1/models", _unknown_key(), proxy, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}, {client}")
    assert _get("/v1/models", _unknown_key(), proxy, HTTP_X_FORWARDED_FOR=client).status_code == 429
    assert _get("/v1/models", _unknown_key(), proxy, HTTP_X_FORWARDED_FOR=f"{client}, {other}").status_code == 401


def test_the_same_unknown_key_costs_one_query_while_remembered(
    two_tenants: tuple[Organization, Organization], limit: int
) -> None:
    key, address = _unknown_key(), _address()
    with CaptureQueriesContext(connection) as first:
        assert _get("/v1/models", key, address).status_code == 401
    assert any("apikeys_apikey" in q["sql"] for q in first.captured_queries)
    with CaptureQueriesContext(connection) as repeated:
        for _ in range(5):
            assert _get("/v1/models", key, address).status_code == 401
            assert _get("/api/v1/budgets", key, address).status_code == 401
    assert len(repeated) == 0, [q["sql"] for q in repeated.captured_queries]


def test_a_revoked_key_is_refused_at_once_and_then_remembered(
    two_tenants: tuple[Organization, Organization], limit: int, django_capture_on_commit_callbacks: Any
) -> None:
    tenant_connection().set_schema_to_public()
    key = apikey_create(organization=two_tenants[0], name="edge", actor=TEST_ACTOR).key
    address = _address()
    assert _get("/v1/models", key, address).status_code == 200  # now cached by this process
    with django_capture_on_commit_callbacks(execute=True):
        apikey_revoke(api_key=ApiKey.objects.get(organization=two_tenants[0], name="edge"), actor=TEST_ACTOR)
    assert _get("/v1/models", key, address).status_code == 401
    with CaptureQueriesContext(connection) as repeated:
        assert _get("/api/v1/budgets", key, address).status_code == 401
    assert len(repeated) == 0


# --- loopback hosts in development --------------------------------------------------------------


def test_make_run_listens_on_both_loopback_addresses() -> None:
    ipv6 = socket.has_ipv6 and _ipv6_loopback_available()
    assert web_hosts("127.0.0.1") == ["127.0.0.1", *(["::1"] if ipv6 else [])]
    assert web_hosts("0.0.0.0") == ["0.0.0.0"]  # noqa: S104 - an explicit choice is kept
    # Granian listens on one address: a server per address, the extra loopback one with one process.
    commands = web_commands(host="127.0.0.1", port=8000, processes=3)
    assert list(commands) == ["web", *(["web on ::1"] if ipv6 else [])]
    assert commands["web"][-8:-2] == ["--host", "127.0.0.1", "--port", "8000", "--processes", "3"]
    if ipv6:
        assert commands["web on ::1"][-8:-2] == ["--host", "::1", "--port", "8000", "--processes", "1"]


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "[::1]:8000", "127.0.0.1", "[::1]"])
def test_loopback_addresses_are_the_platform_host(
    host: str, two_tenants: tuple[Organization, Organization], api_client_for: Callable[[Organization], Any]
) -> None:
    client = Client()
    home = client.get("/", HTTP_HOST=host)
    assert home.status_code == 200 and b"CognitionOS" in home.content
    assert client.get("/health/live", HTTP_HOST=host).json() == {"status": "ok"}
    assert client.get("/admin/login/", HTTP_HOST=host).status_code == 200
    api = api_client_for(two_tenants[0])
    assert api.get("/api/v1/budgets", HTTP_HOST=host).status_code == 200
    models = api.get("/v1/models", HTTP_HOST=host)
    assert models.status_code == 200 and models.json()["data"]


def test_development_serves_loopback_addresses_and_production_does_not() -> None:
    show = "from django.conf import settings; print(sorted(settings.ALLOWED_HOSTS), sorted(settings.PUBLIC_HOSTS))"
    development = _manage("cognitionos.settings.development", "shell", "-c", show, BASE_DOMAIN=None)
    assert development.returncode == 0, development.stderr
    assert "'127.0.0.1'" in development.stdout.split("] [")[1] and "'[::1]'" in development.stdout.split("] [")[1]
    assert "'[::1]'" in development.stdout.split("] [")[0] and "'localhost'" in development.stdout
    production = _manage("cognitionos.settings.production", "shell", "-c", show)
    assert production.returncode == 0, production.stderr
    assert "127.0.0.1" not in production.stdout and "::1" not in production.stdout
