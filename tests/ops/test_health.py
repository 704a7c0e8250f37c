from __future__ import annotations

from typing import Any

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


def test_metrics_answer_a_scrape_by_pod_ip_with_the_token_only(db: None, settings: Any) -> None:
    settings.METRICS_TOKEN = "scrape-" * 6
    pod = Client()
    assert pod.get("/metrics", HTTP_HOST="10.1.2.3:8000").status_code == 401
    response = pod.get("/metrics", HTTP_HOST="10.1.2.3:8000", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}")
    assert response.status_code == 200
    assert b"# TYPE" in response.content
