"""Helpers for tests that start real processes against the test database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def database_url_for_subprocess() -> str:
    """A DATABASE_URL naming the test database (pytest-django renamed it in this process only)."""
    params = connection.settings_dict
    user = quote(params["USER"] or "", safe="")
    password = quote(params["PASSWORD"] or "", safe="")
    credentials = f"{user}:{password}@" if password else f"{user}@" if user else ""
    host = quote(params["HOST"] or "", safe="")
    port = f":{params['PORT']}" if params["PORT"] else ""
    return f"postgresql://{credentials}{host}{port}/{params['NAME']}"


def run_cognitionos(*args: str) -> subprocess.CompletedProcess[str]:
    """The `cognitionos` command as a user runs it, against the test database and Redis."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "DJANGO_SETTINGS_MODULE": "cognitionos.settings.development",
    }
    return subprocess.run(
        [sys.executable, "-c", "from cognitionos.cli import main; main()", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def python_run(script: str, *, env: dict[str, str]) -> str:
    """`python -c script` in the project's folder with `env`; its standard output (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def gunicorn_serving(*, port: int, env: dict[str, str], binds: list[str] | None = None) -> Iterator[str]:
    """The production web server (gunicorn_conf) on the test database, answering /health/live when
    this yields its base URL; `env` adds settings (WEB_THREADS, provider URLs). Stopped on exit."""
    environment = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "DJANGO_SETTINGS_MODULE": "cognitionos.settings.test",
        **env,
    }
    arguments = [arg for bind in (binds or [f"127.0.0.1:{port}"]) for arg in ("--bind", bind)]
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "-c", "python:cognitionos.gunicorn_conf"),
            *("cognitionos.wsgi:application", *arguments, "--access-logfile", "/dev/null"),
        ],
        cwd=ROOT,
        env=environment,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)
        yield base
    finally:
        # Killed, not stopped: a graceful stop waits out the browser's keep-alive connections and a
        # quick one still finalizes the worker's interpreter, seconds per test with nothing to check.
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
