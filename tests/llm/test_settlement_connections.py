"""A paid call's settlement waits for a pooled connection instead of failing on the pool's short wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from django.db import OperationalError, connection
from django.test.utils import override_settings

from apps.llm.budgets import connection_await


@pytest.fixture
def tight_pool(db: None) -> Iterator[object]:
    """The process's pool left with one free connection and no room to grow, with a 0.2 s wait. Its
    other free connections (earlier tests' threads leave some) are taken out for the test."""
    connection.ensure_connection()
    pool = connection.pool  # type: ignore[attr-defined] # the PostgreSQL backend's, not in the stubs
    saved = (pool.min_size, pool.max_size, pool.timeout)
    stats = pool.get_stats()
    free = stats["pool_available"]
    pool.resize(min_size=1, max_size=stats["pool_size"] + (0 if free else 1))
    spare = [pool.getconn() for _ in range(free - 1)]
    pool.timeout = 0.2
    try:
        yield pool
    finally:
        for conn in spare:
            pool.putconn(conn)
        pool.timeout = saved[2]
        pool.resize(min_size=saved[0], max_size=saved[1])


def _hold_the_last_connection(seconds: float, taken: threading.Event) -> None:
    connection.ensure_connection()
    taken.set()
    time.sleep(seconds)
    connection.close()


def _connect() -> None:
    connection.ensure_connection()  # the calling thread's own connection


def _in_a_thread(target: object) -> BaseException | None:
    failure: list[BaseException] = []

    def run() -> None:
        try:
            target()  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            failure.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    return failure[0] if failure else None


def test_a_settlement_waits_out_a_busy_pool(tight_pool: object) -> None:
    taken = threading.Event()
    holder = threading.Thread(target=_hold_the_last_connection, args=(1.0, taken))
    holder.start()
    assert taken.wait(5)
    # The pool's own wait fails while the last connection is held...
    assert isinstance(_in_a_thread(_connect), OperationalError)
    # ...a settlement's wait outlasts it and gets the connection when it is given back.
    started = time.monotonic()
    assert _in_a_thread(connection_await) is None
    assert time.monotonic() - started >= 0.5
    holder.join()


def test_a_settlement_gives_up_when_the_hold_would_have_expired(tight_pool: object) -> None:
    taken = threading.Event()
    holder = threading.Thread(target=_hold_the_last_connection, args=(1.5, taken))
    holder.start()
    assert taken.wait(5)
    with override_settings(LLM_HOLD_SECONDS=0):
        assert isinstance(_in_a_thread(connection_await), OperationalError)
    holder.join()
