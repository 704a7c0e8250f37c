"""cognitionos.celery: a task sent by name leaves the sending process subscribed to nothing.

Celery's Redis result backend subscribes the sender to a task's result channel unless the send
says the result is ignored, and a task sent by name has no task object to say it: every web
process would hold one more channel for every task it ever sent."""

from __future__ import annotations

import json
import uuid

import celery.app.amqp
import pytest

from cognitionos.celery import app
from cognitionos.redis import redis_client


def _subscribed(task_id: str) -> bool:
    channel = app.backend.get_key_for_task(task_id).decode()  # type: ignore[attr-defined] # the Redis backend
    return bool(redis_client().pubsub_numsub(channel)[0][1])


def test_a_task_sent_by_name_subscribes_to_no_result_channel() -> None:
    queue = f"tests-sends-{uuid.uuid4().hex}"
    try:
        sent = app.send_task("tests.never_run", kwargs={"n": 1}, queue=queue)
        # What Celery does when the send doesn't say: the check sees a subscription.
        subscribing = app.send_task("tests.never_run", kwargs={"n": 2}, queue=queue, ignore_result=False)
        assert _subscribed(subscribing.id)
        assert not _subscribed(sent.id)
        assert redis_client().llen(queue) == 2  # both were sent
    finally:
        app.backend.result_consumer.cancel_for(subscribing.id)  # type: ignore[attr-defined]
        redis_client().delete(queue)


def test_a_send_describes_its_arguments_without_celerys_saferepr(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*_: object, **__: object) -> str:
        raise AssertionError("saferepr is what the send no longer spends its time in")

    monkeypatch.setattr(celery.app.amqp, "saferepr", refused)
    queue = f"tests-sends-{uuid.uuid4().hex}"
    try:
        app.send_task("tests.never_run", kwargs={"tenant_id": 2, "item_id": "x" * 2000}, queue=queue)
        app.send_task("tests.never_run", [1, "two"], queue=queue)
        described = [json.loads(message)["headers"] for message in reversed(redis_client().lrange(queue, 0, -1))]
    finally:
        redis_client().delete(queue)
    assert described[0]["argsrepr"] == "()"
    assert described[0]["kwargsrepr"] == repr({"tenant_id": 2, "item_id": "x" * 2000})[:1024]
    assert described[1]["argsrepr"] == "(1, 'two')"
    assert described[1]["kwargsrepr"] == "{}"
