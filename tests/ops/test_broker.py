"""The Redis broker channel publishes through one redis-py client (cognitionos/celery.py): kombu's
own builds a client per publish, which cost more than the publish itself."""

from __future__ import annotations

import uuid
from typing import Any

from cognitionos.celery import app


def test_a_channel_publishes_through_one_redis_client_over_its_own_pool() -> None:
    with app.connection_for_write() as connection:
        channel: Any = connection.default_channel  # kombu's Redis channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.connection_pool is channel.pool


def test_a_client_given_by_the_caller_is_used() -> None:
    with app.connection_for_write() as connection:
        channel: Any = connection.default_channel  # kombu's Redis channel
        given = object()
        with channel.conn_or_acquire(client=given) as used:
            assert used is given


def test_messages_published_through_the_shared_client_arrive_in_order() -> None:
    with app.connection_for_write() as connection, connection.SimpleQueue(f"test-broker-{uuid.uuid4().hex}") as queue:
        try:
            for number in range(3):
                queue.put({"number": number})
            received = []
            for _ in range(3):
                message = queue.get(timeout=5)
                received.append(message.payload["number"])
                message.ack()
            assert received == [0, 1, 2]
        finally:
            queue.clear()
