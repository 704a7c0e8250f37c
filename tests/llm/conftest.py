from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import openai
import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from apps.apikeys.selectors import apikey_cache_forget
from apps.llm import caching
from apps.llm.platform.selectors import catalog_forget
from apps.llm.selectors import llm_settings_forget
from apps.llm.services import provider_own_keys_forget
from cognitionos.redis import redis_client
from cognitionos.wsgi import application


@pytest.fixture(autouse=True)
def _fresh_llm_state() -> Iterator[None]:
    """Caches and counters from another test must not answer for this one."""
    caching.l1.clear()
    catalog_forget()
    apikey_cache_forget()
    provider_own_keys_forget()
    llm_settings_forget()
    client = redis_client()
    for pattern in ("llm:*",):
        keys = list(client.scan_iter(pattern, count=1000))
        if keys:
            client.delete(*keys)
    yield
    caching.l1.clear()
    catalog_forget()
    llm_settings_forget()


@contextmanager
def connections_kept_open() -> Iterator[None]:
    """Django's handler closes the connection at each request's start and end; in a test that would
    end the test's transaction. Django's own test client does the same around its requests."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


class _InThisTransaction:
    """The WSGI application, run so that it shares the test's connection and transaction."""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        with connections_kept_open():
            body = application(environ, start_response)
            try:
                return [b"".join(body)]
            finally:
                getattr(body, "close", lambda: None)()


def gateway_client(key: str) -> openai.OpenAI:
    """The real openai SDK, talking HTTP to our WSGI application in this thread (so it sees the
    test's transaction)."""
    transport = httpx2.WSGITransport(app=_InThisTransaction())
    return openai.OpenAI(
        base_url="http://localhost/v1",
        api_key=key,
        max_retries=0,
        http_client=httpx2.Client(transport=transport, base_url="http://localhost/v1"),
    )
