"""Helpers for tests that start real processes against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

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
