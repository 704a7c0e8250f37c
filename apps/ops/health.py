"""Readiness checks: each returns None when the dependency answers, or what went wrong."""

from __future__ import annotations

from collections.abc import Callable

from django.db import connections

from cognitionos.celery import app as celery_app
from cognitionos.redis import redis_client


def check_database() -> str | None:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return type(exc).__name__
    return None


def check_redis() -> str | None:
    try:
        redis_client().ping()
    except Exception as exc:  # noqa: BLE001
        return type(exc).__name__
    return None


def check_broker() -> str | None:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            conn.default_channel.client.ping()  # type: ignore[attr-defined]  # kombu's Redis channel
    except Exception as exc:  # noqa: BLE001
        return type(exc).__name__
    return None


CHECKS: dict[str, Callable[[], str | None]] = {
    "database": check_database,
    "redis": check_redis,
    "broker": check_broker,
}
