"""/metrics adds up every process's metrics when PROMETHEUS_MULTIPROC_DIR is set (gunicorn runs
several workers, Celery workers run beside them: a scrape must not see only whichever answered)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from apps.ops.metrics import metrics_multiproc_prepare
from cognitionos import gunicorn_conf
from tests.support.processes import ROOT

# What a worker process does: the LLM engine's metrics, written to the shared directory.
WORKER = """
import os
from apps.llm import metrics
metrics.REQUESTS.labels("simulator", "simulated-mini", "succeeded", "miss").inc(3)
metrics.OPEN_HOLDS.inc(2)
metrics.BREAKER_OPEN.labels("openai", "gpt-4o-mini").set(float(os.environ["BREAKER"]))
print(os.getpid())
"""


def _worker(breaker: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", WORKER],
        cwd=ROOT,
        env={**os.environ, "BREAKER": str(breaker)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(done.stdout)


def _scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = Client().get("/metrics", HTTP_HOST="localhost")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


REQUESTS = (
    "cognitionos_llm_requests_total",
    (("cache", "miss"), ("model", "simulated-mini"), ("provider", "simulator"), ("status", "succeeded")),
)
HOLDS = ("cognitionos_llm_budget_holds_open", ())
BREAKER = ("cognitionos_llm_breaker_open", (("model", "gpt-4o-mini"), ("provider", "openai")))


def test_metrics_of_other_processes_are_added_up(db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "counter_1.db").write_bytes(b"left over from an earlier run")
    metrics_multiproc_prepare(tmp_path)  # what `cognitionos up` does before starting its processes
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    first, second = _worker(breaker=1), _worker(breaker=0)
    scraped = _scrape()
    assert scraped[REQUESTS] == 6.0  # both processes' counts
    assert scraped[HOLDS] == 4.0
    assert scraped[BREAKER] == 0.0  # the state written last
    # gunicorn's hook when a worker exits: its live gauges go, its counts stay.
    gunicorn_conf.child_exit(None, SimpleNamespace(pid=first))
    scraped = _scrape()
    assert (scraped[REQUESTS], scraped[HOLDS]) == (6.0, 2.0)
    gunicorn_conf.child_exit(None, SimpleNamespace(pid=second))
    assert _scrape().get(HOLDS, 0.0) == 0.0


def test_without_the_directory_metrics_are_this_processs(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from apps.llm import metrics

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    before = _scrape().get(REQUESTS, 0.0)
    metrics.REQUESTS.labels("simulator", "simulated-mini", "succeeded", "miss").inc()
    assert _scrape()[REQUESTS] == before + 1
