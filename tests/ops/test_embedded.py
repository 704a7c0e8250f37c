"""The embedded servers `make run` and `make test` use when no DATABASE_URL / REDIS_URL is given."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
import redis

from cognitionos.embedded import EmbeddedPostgres, EmbeddedRedis, _pid_alive, services_attach


@pytest.fixture
def short_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("svc"))


def test_embedded_redis_persists_refuses_eviction_and_stops(short_tmp: Path) -> None:
    server = EmbeddedRedis(short_tmp)
    server.start()
    try:
        client = redis.Redis.from_url(server.url(3))
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("port") == {"port": "0"}  # Unix socket only
        assert server.socket.parent == short_tmp / "redis"
        client.set("kept", "1")
    finally:
        pid = server.pid()
        server.stop()
    assert pid is not None and not _pid_alive(pid)
    assert (short_tmp / "redis" / "appendonly.aof").read_bytes().count(b"kept") == 1

    server.start()  # the same folder again: the data survived the restart
    try:
        assert redis.Redis.from_url(server.url(3)).get("kept") == b"1"
    finally:
        server.stop()


def test_embedded_postgres_has_pgvector_room_for_the_pools_and_stops(short_tmp: Path) -> None:
    server = EmbeddedPostgres(short_tmp)
    server.start()
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            assert conn.execute("SHOW max_connections").fetchone() == ("400",)
            assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            assert conn.execute("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector").fetchone() == (1.0,)
        assert server.is_running()
    finally:
        pid = server.pid()
        server.stop()
    assert pid is not None and not _pid_alive(pid)
    assert not server.is_running()


def test_a_second_command_attaches_to_the_running_servers(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What lets `cognitionos ...` in another terminal act on the stack `make run` started."""
    for name in ("DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    first = services_attach(data_dir=short_tmp)
    assert first.postgres is not None and first.redis is not None
    try:
        assert len(first.started) == 2
        urls = (os.environ["DATABASE_URL"], os.environ["REDIS_URL"])
        for name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)
        second = services_attach(data_dir=short_tmp)
        assert second.started == []
        assert (os.environ["DATABASE_URL"], os.environ["REDIS_URL"]) == urls
        second.stop_owned()  # it owns nothing: the servers keep running
        assert first.postgres.is_running() and first.redis.is_running()
    finally:
        first.stop_owned()
    assert not first.postgres.is_running() and not first.redis.is_running()
