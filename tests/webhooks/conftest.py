from __future__ import annotations

from typing import Any

import pytest

from apps.webhooks import tasks

SentTasks = list[dict[str, Any]]


@pytest.fixture
def sent_tasks(monkeypatch: pytest.MonkeyPatch) -> SentTasks:
    """Record `webhook_deliver` tasks instead of sending them to the broker."""
    sent: SentTasks = []
    monkeypatch.setattr(tasks.webhook_deliver, "delay", lambda **kwargs: sent.append(kwargs))
    return sent


@pytest.fixture
def quick_retries(settings: Any) -> Any:
    """Retries due at once (no backoff), three attempts in all."""
    settings.WEBHOOK_RETRY_DELAYS_SECONDS = [0]
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    return settings
