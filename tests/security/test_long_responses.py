"""Issue 9, item 6: streams can't take every web thread. One web server process with 4 threads (so a cap
of 2 long responses): two slow model streams hold their slots, a third stream of any kind (chat,
Anthropic messages, job events) is refused at once with 429 and Retry-After, and short requests are
still answered promptly."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from apps.apikeys.services import apikey_create
from apps.tenants.connection import tenant_connection
from tests.conftest import LiveDb
from tests.factories import TEST_ACTOR
from tests.support.fake_provider import FakeProvider
from tests.support.processes import free_port, web_serving

pytestmark = pytest.mark.integration


def _web_server(provider: FakeProvider) -> Any:
    """One process with 4 threads (a cap of 2 long responses), the fake provider as the platform's."""
    env = {
        "WEB_PROCESSES": "1",
        "WEB_THREADS": "4",
        "OPENAI_API_KEY": "sk-test-platform",
        "OPENAI_BASE_URL": provider.openai_base_url,
        "ANTHROPIC_API_KEY": "sk-ant-test-platform",
        "ANTHROPIC_BASE_URL": provider.anthropic_base_url,
    }
    return web_serving(port=free_port(), env=env)


@pytest.fixture
def slow_provider() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        provider.slow_stream(chunk_delay_s=1.5)  # a stream of about ten events lasts fifteen seconds
        yield provider


def test_streams_over_the_cap_are_refused_and_short_requests_still_answered(
    live_db: LiveDb, slow_provider: FakeProvider
) -> None:
    organization = live_db.organization(slug="streams-cap")
    tenant_connection().set_schema_to_public()
    key = apikey_create(organization=organization, name="streams", actor=TEST_ACTOR).key
    headers = {"Authorization": f"Bearer {key}", "Host": "localhost"}
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}], "stream": True}
    with _web_server(slow_provider) as base:
        opened: list[int] = []
        release = threading.Event()
        hold = functools.partial(_hold_a_stream, f"{base}/v1/chat/completions", chat, headers, opened, release)
        holders = [threading.Thread(target=hold) for _ in range(2)]
        for holder in holders:
            holder.start()
        deadline = time.monotonic() + 20
        while len(opened) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert opened == [200, 200]
        try:
            started = time.perf_counter()
            refused = httpx2.post(f"{base}/v1/chat/completions", json=chat, headers=headers, timeout=5)
            assert time.perf_counter() - started < 1.0
            assert refused.status_code == 429
            assert refused.headers["Retry-After"] == "5"
            assert refused.json()["error"]["code"] == "too_many_streams"

            anthropic_body = {**chat, "model": "claude-haiku-4-5", "max_tokens": 10}
            refused = httpx2.post(f"{base}/v1/messages", json=anthropic_body, headers=headers, timeout=5)
            assert (refused.status_code, refused.json()["type"]) == (429, "error")

            submitted = httpx2.post(
                f"{base}/api/v1/jobs", json={"prompt": "hi", "model": "simulated-mini"}, headers=headers, timeout=5
            )
            assert submitted.status_code == 202
            events = httpx2.get(f"{base}/api/v1/jobs/{submitted.json()['id']}/events", headers=headers, timeout=5)
            assert events.status_code == 429
            assert events.json()["error"]["code"] == "too_many_streams"

            for _ in range(5):  # the other threads still serve short requests promptly
                started = time.perf_counter()
                models = httpx2.get(f"{base}/v1/models", headers=headers, timeout=5)
                assert models.status_code == 200
                assert time.perf_counter() - started < 1.0
            assert slow_provider.max_in_flight <= 2  # a refused stream never reached the provider
        finally:
            release.set()
            for holder in holders:
                holder.join(30)
        # Slots come back when streams end (a stream whose client left ends at its next write).
        deadline = time.monotonic() + 30
        while (first := _first_line(f"{base}/v1/chat/completions", chat, headers)) is None:
            assert time.monotonic() < deadline, "the slots of closed streams never came back"
            time.sleep(0.5)
        assert json.loads(first.removeprefix("data: "))["object"] == "chat.completion.chunk"


def _first_line(url: str, body: dict[str, Any], headers: dict[str, str]) -> str | None:
    """A stream's first event, or None if it was refused as over the cap."""
    with httpx2.Client(timeout=30) as client, client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code == 429:
            return None
        assert response.status_code == 200
        return next(line for line in response.iter_lines() if line)


def _hold_a_stream(
    url: str, body: dict[str, Any], headers: dict[str, str], opened: list[int], release: threading.Event
) -> None:
    with httpx2.Client(timeout=30) as client, client.stream("POST", url, json=body, headers=headers) as response:
        opened.append(response.status_code)
        release.wait(30)
