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
def web_serving(*, port: int, env: dict[str, str], hosts: list[str] | None = None) -> Iterator[str]:
    """The production web server (cognitionos.web) on the test database, one per address in `hosts`
    (127.0.0.1 by default), each answering /health/live when this yields the first one's base URL;
    `env` adds settings (WEB_PROCESSES, WEB_THREADS, provider URLs). Stopped on exit."""
    environment = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "DJANGO_SETTINGS_MODULE": "cognitionos.settings.test",
        **env,
    }
    servers = {
        host: subprocess.Popen(
            [sys.executable, "-m", "cognitionos.web", "--host", host, "--port", str(port), "--no-access-log"],
            cwd=ROOT,
            env=environment,
            start_new_session=True,
        )
        for host in hosts or ["127.0.0.1"]
    }
    bases = {host: f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}" for host in servers}
    try:
        deadline = time.monotonic() + 60
        for host, server in servers.items():
            while True:
                try:
                    if httpx.get(f"{bases[host]}/health/live", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert server.poll() is None and time.monotonic() < deadline, f"the web server on {host} did not start"
                time.sleep(0.2)
        yield next(iter(bases.values()))
    finally:
        # Killed, not stopped: a graceful stop waits out the browser's keep-alive connections and a
        # quick one still finalizes the worker's interpreter, seconds per test with nothing to check.
        for server in servers.values():
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
