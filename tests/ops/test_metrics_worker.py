"""A real Celery worker serves its metrics on WORKER_METRICS_PORT, and in multiprocess mode the web's
/metrics adds the worker's series to its own (one directory, as `cognitionos up` runs them)."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from apps.llm.tasks import llm_holds_sweep_all
from tests.conftest import LiveDb
from tests.support.worker import celery_worker

pytestmark = pytest.mark.integration

SWEEP = "apps.llm.tasks.llm_holds_sweep_all"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _task_count(text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "cognitionos_celery_tasks_total" and sample.labels == {"task": SWEEP, "state": "SUCCESS"}
    )


def test_a_worker_exports_its_task_counts_on_its_port_and_to_the_web_in_multiprocess_mode(
    live_db: LiveDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _free_port()
    env = {"WORKER_METRICS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with celery_worker(concurrency=2, env=env, name="metrics"):
        llm_holds_sweep_all.delay()
        deadline, exported = time.monotonic() + 30, ""
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                exported = answer.read().decode()
            if _task_count(exported) >= 1:
                break
            time.sleep(0.3)
        assert _task_count(exported) >= 1
        assert "cognitionos_celery_task_duration_seconds_bucket" in exported
        # The web process reads the same directory: the worker's counts are in its scrape too.
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        scraped = Client().get("/metrics", HTTP_HOST="localhost").content.decode()
        assert _task_count(scraped) >= 1
        assert "cognitionos_queue_depth" in scraped
