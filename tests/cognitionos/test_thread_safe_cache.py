"""The process-wide clients are made once even when the first calls race (a web process's first
requests): a second client would be dropped while in use and close its connections under it."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import redis

from cognitionos.redis import redis_client
from cognitionos.thread_safe_cache import thread_safe_cache


def test_racing_first_calls_run_the_factory_once_per_arguments() -> None:
    made: list[str] = []
    start = threading.Barrier(8)

    @thread_safe_cache
    def client(name: str) -> object:
        made.append(name)
        time.sleep(0.05)  # long enough for every racing thread to arrive while it runs
        return object()

    def first_call(index: int) -> object:
        start.wait()
        return client("a" if index % 2 else "b")

    with ThreadPoolExecutor(8) as pool:
        clients = list(pool.map(first_call, range(8)))
    assert sorted(made) == ["a", "b"]
    assert len({id(c) for c in clients}) == 2
    assert client("a") is clients[1] and client("b") is clients[0]


def test_redis_client_racing_threads_share_one_pool_that_stays_open() -> None:
    redis_client.cache_clear()  # type: ignore[attr-defined]
    start = threading.Barrier(8)

    def first_call(_: int) -> redis.Redis:
        start.wait()
        client = redis_client()
        client.ping()
        return client

    with ThreadPoolExecutor(8) as pool:
        clients = list(pool.map(first_call, range(8)))
    assert len({id(c) for c in clients}) == 1
    assert clients[0].ping()
