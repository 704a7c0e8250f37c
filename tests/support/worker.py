"""A real Celery worker process for integration tests, on the test database and the test queue."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from cognitionos.celery import app as celery_app
from tests.support.processes import database_url_for_subprocess

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def celery_worker(
    *, concurrency: int = 8, env: dict[str, str] | None = None, name: str = "main"
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker process; `env` adds settings (the fake provider's OPENAI_BASE_URL, say)."""
    process = worker_start(concurrency=concurrency, env=env, name=name)
    try:
        yield process
    finally:
        worker_stop(process)


def worker_start(
    *, concurrency: int = 8, env: dict[str, str] | None = None, name: str = "main"
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "DJANGO_SETTINGS_MODULE": "cognitionos.settings.test",
        **(env or {}),
    }
    hostname = f"test-{os.getpid()}-{name}@%h"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "cognitionos",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(concurrency),
            "--queues",
            settings.CELERY_TASK_DEFAULT_QUEUE,
            "--include",
            "tests.support.probe_tasks",
            "--hostname",
            hostname,
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
    )
    node = hostname.split("@", maxsplit=1)[0]
    deadline = time.monotonic() + 60
    while not any(node in name for reply in celery_app.control.ping(timeout=0.5) or [] for name in reply):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the test Celery worker did not come up")
    return process


def worker_stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
