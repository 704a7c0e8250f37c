from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.test import Client

from cognitionos.redis import redis_client

ClientFor = Callable[[str], Client]


@pytest.fixture
def client_for() -> ClientFor:
    """`client_for("acme.localhost")`: a test client for one host. A browser keeps cookies per host
    and the Django test client doesn't, so each host gets its own client (its own cookie jar)."""

    def make(host: str) -> Client:
        return Client(HTTP_HOST=host)

    return make


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> Iterator[None]:
    """allauth's rate-limit counters live in the shared Redis; each test starts with none."""

    def forget() -> None:
        client = redis_client()
        for key in client.scan_iter(match="global:*allauth:rl:*"):
            client.delete(key)

    forget()
    yield
    forget()
