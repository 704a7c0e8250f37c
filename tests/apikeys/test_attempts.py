"""apps.apikeys.attempts: the limiter on failed key attempts guards the database, it is not the authority."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import redis
from django.test import Client
from redis.backoff import NoBackoff
from redis.retry import Retry

from apps.apikeys.attempts import client_bucket
from apps.apikeys.services import apikey_create
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR


def _get(path: str, key: str, address: str) -> Any:
    return Client().get(path, HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {key}", REMOTE_ADDR=address)


def _address() -> str:
    return f"2001:db8:{secrets.token_hex(2)}:{secrets.token_hex(2)}::7"


def _unknown_key() -> str:
    return f"cos_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


@pytest.fixture
def limit(settings: Any) -> int:
    settings.API_KEY_FAILURES_PER_MINUTE = 20
    return 20


def test_without_redis_keys_are_still_checked_against_the_database(
    two_tenants: tuple[Organization, Organization], limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limiter is a guard, not the authority: if Redis is gone, authentication goes on."""
    tenant_connection().set_schema_to_public()
    key = apikey_create(organization=two_tenants[0], name="edge", actor=TEST_ACTOR).key
    # Refused at once, without redis-py's default retries (seconds of backoff per command).
    unreachable = redis.Redis(
        unix_socket_path="/nonexistent/redis.sock", socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    monkeypatch.setattr("apps.apikeys.attempts.redis_client", lambda: unreachable)
    address = _address()
    assert _get("/v1/models", _unknown_key(), address).status_code == 401
    assert _get("/v1/models", key, address).status_code == 200


def test_failures_are_counted_per_address_and_per_ipv6_subscriber_block() -> None:
    assert client_bucket("203.0.113.9") == "203.0.113.9"
    assert client_bucket("::ffff:203.0.113.9") == "203.0.113.9"
    assert client_bucket("2001:db8:1:2:aaaa::1") == client_bucket("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_bucket("") == "unknown"
