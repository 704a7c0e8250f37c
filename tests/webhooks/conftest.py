from __future__ import annotations

from typing import Any

import pytest

from apps.webhooks.services import DELIVERY
from apps.work.services import WORK_RUN_TASK
from cognitionos.celery import app as celery_app

SentTasks = list[dict[str, Any]]


@pytest.fixture
def sent_tasks(monkeypatch: pytest.MonkeyPatch) -> SentTasks:
    """Record the runtime's run messages for deliveries (`work_run`, kind webhook_delivery)
    instead of sending them to the broker, as {"tenant_id", "delivery_id"}."""
    sent: SentTasks = []

    def send_task(name: str, kwargs: dict[str, Any], countdown: float | None = None) -> None:
        assert name == WORK_RUN_TASK
        if kwargs["kind"] == DELIVERY.name:
            sent.append({"tenant_id": kwargs["tenant_id"], "delivery_id": kwargs["item_id"]})

    monkeypatch.setattr(celery_app, "send_task", send_task)
    return sent


@pytest.fixture
def quick_retries(settings: Any) -> Any:
    """Retries due at once (no backoff), three attempts in all."""
    settings.WEBHOOK_RETRY_DELAYS_SECONDS = [0]
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    return settings
