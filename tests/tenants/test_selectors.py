"""The per-process organization caches: one read per expiry, however many threads ask at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from apps.tenants import selectors
from apps.tenants.models import Organization


@pytest.fixture
def forgetting() -> Any:
    selectors.organization_cache_forget()
    yield
    selectors.organization_cache_forget()


def _counting(monkeypatch: pytest.MonkeyPatch, name: str, found: Organization | None) -> list[object]:
    """Replace selectors.`name` by a slow read that records its calls (no database: the threads
    would each need a connection of their own)."""
    calls: list[object] = []

    def slow_read(key: object) -> Organization | None:
        calls.append(key)
        time.sleep(0.2)  # long enough for every thread to ask while it runs
        return found

    monkeypatch.setattr(selectors, name, slow_read)
    return calls


def _ask_together(ask: Callable[[], Organization | None], threads: int = 20) -> list[Organization | None]:
    start = threading.Barrier(threads)

    def one(_: int) -> Organization | None:
        start.wait()
        return ask()

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(threads)))


@pytest.mark.usefixtures("forgetting")
def test_threads_asking_for_an_expired_organization_read_it_once(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.TENANT_RESOLUTION_CACHE_SECONDS = 60
    acme = Organization(pk=7, slug="acme", name="Acme", schema_name="org_acme")
    calls = _counting(monkeypatch, "organization_by_id", acme)

    found = _ask_together(lambda: selectors.organization_by_id_cached(7))

    assert calls == [7]
    assert {organization.slug for organization in found if organization is not None} == {"acme"}
    # Each caller has its own copy: one thread changing its row changes no other's.
    assert len({id(organization) for organization in found}) == len(found)


@pytest.mark.usefixtures("forgetting")
def test_hosts_are_read_once_each_and_unknown_hosts_every_time(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    settings.TENANT_RESOLUTION_CACHE_SECONDS = 60
    acme = Organization(pk=7, slug="acme", name="Acme", schema_name="org_acme")
    calls = _counting(monkeypatch, "organization_for_host", acme)
    _ask_together(lambda: selectors.organization_for_host_cached("acme.example.com"))
    assert calls == ["acme.example.com"]

    # An unknown host is not remembered (an organization may take the name later).
    calls = _counting(monkeypatch, "organization_for_host", None)
    assert _ask_together(lambda: selectors.organization_for_host_cached("nobody.example.com"), threads=3) == [None] * 3
    assert calls == ["nobody.example.com"] * 3


@pytest.mark.usefixtures("forgetting")
def test_without_a_cache_lifetime_every_ask_reads(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    settings.TENANT_RESOLUTION_CACHE_SECONDS = 0
    acme = Organization(pk=7, slug="acme", name="Acme", schema_name="org_acme")
    calls = _counting(monkeypatch, "organization_by_id", acme)
    _ask_together(lambda: selectors.organization_by_id_cached(7), threads=3)
    assert calls == [7, 7, 7]
