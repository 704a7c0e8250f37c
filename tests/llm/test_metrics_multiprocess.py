"""/metrics adds up every process's metrics when PROMETHEUS_MULTIPROC_DIR is set (the web server runs
several processes, Celery workers run beside them: a scrape must not see only whichever answered)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from apps.ops.metrics import metrics_multiproc_prepare
from tests.support.processes import ROOT

# What a worker process does: the LLM engine's metrics, written to the shared directory; then it
# lives until its stdin closes.
WORKER = """
import os, sys
from apps.llm import metrics
metrics.REQUESTS.labels("simulator", "simulated-mini", "succeeded", "miss").inc(3)
metrics.OPEN_HOLDS.inc(2)
metrics.BREAKER_OPEN.labels("openai", "gpt-4o-mini").set(float(os.environ["BREAKER"]))
print(os.getpid(), flush=True)
sys.stdin.read()
"""


def _worker_start(breaker: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER],
        cwd=ROOT,
        env={**os.environ, "BREAKER": str(breaker)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == str(process.pid)
    return process


def _worker_end(process: subprocess.Popen[str]) -> None:
    """The process ends with no hook run for it, as one killed or replaced by its server would."""
    assert process.stdin is not None
    process.stdin.close()
    assert process.wait(timeout=60) == 0


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
    first = _worker_start(breaker=1)
    second = _worker_start(breaker=0)
    try:
        scraped = _scrape()
        assert scraped[REQUESTS] == 6.0  # both processes' counts
        assert scraped[HOLDS] == 4.0
        assert scraped[BREAKER] == 0.0  # the state written last
        # A process that ended: the next scrape drops its live gauges; its counts stay.
        _worker_end(first)
        assert (tmp_path / f"gauge_livesum_{first.pid}.db").exists()
        scraped = _scrape()
        assert (scraped[REQUESTS], scraped[HOLDS]) == (6.0, 2.0)
        assert not (tmp_path / f"gauge_livesum_{first.pid}.db").exists()
        assert (tmp_path / f"gauge_livesum_{second.pid}.db").exists()
    finally:
        for process in (first, second):
            if process.poll() is None:
                _worker_end(process)
    assert _scrape().get(HOLDS, 0.0) == 0.0


def test_without_the_directory_metrics_are_this_processs(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from apps.llm import metrics

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    before = _scrape().get(REQUESTS, 0.0)
    metrics.REQUESTS.labels("simulator", "simulated-mini", "succeeded", "miss").inc()
    assert _scrape()[REQUESTS] == before + 1
