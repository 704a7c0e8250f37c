from __future__ import annotations

import pytest
import redis
from django.test import Client

from cognitionos.celery import app as celery_app


def test_live(db: None) -> None:
    response = Client().get("/health/live", HTTP_HOST="localhost")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_checks_database_redis_and_broker(db: None) -> None:
    response = Client().get("/health/ready", HTTP_HOST="localhost")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok", "broker": "ok"}}


def test_ready_names_the_failing_parts(db: None, monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    dead_socket = f"{tmp_path}/nothing.sock"
    monkeypatch.setattr("apps.ops.health.redis_client", lambda: redis.Redis(unix_socket_path=dead_socket))
    monkeypatch.setattr(celery_app.conf, "broker_url", f"redis+socket://{dead_socket}")
    response = Client().get("/health/ready", HTTP_HOST="localhost")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert set(body["failing"]) == {"redis", "broker"}
