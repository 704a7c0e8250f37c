"""apps.llm.providers imports the provider SDKs (about 2.4 s) where it uses them: a management
command's process never loads them, and the web and worker processes load them as they start."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.processes import database_url_for_subprocess, python_run

LOADED = "print(json.dumps(sorted(m for m in ('openai', 'anthropic') if m in sys.modules)))"


def _loaded_after(settings_env: dict[str, str], *steps: str) -> list[list[str]]:
    script = "\n".join(["import json, sys, django", "django.setup()", LOADED, *(f"{s}\n{LOADED}" for s in steps)])
    output = python_run(script, env=settings_env)
    return [json.loads(line) for line in output.splitlines() if line.startswith("[")]


@pytest.fixture
def settings_env(db: None) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "DJANGO_SETTINGS_MODULE": "cognitionos.settings.test",
    }


def test_commands_never_load_the_sdks_and_a_worker_loads_them_before_its_first_task(
    settings_env: dict[str, str],
) -> None:
    setup, command, worker = _loaded_after(
        settings_env,
        "from django.core.management import call_command\ncall_command('check')",
        "from celery import signals\nfrom cognitionos.celery import app\nsignals.worker_init.send(sender=None)",
    )
    assert setup == command == []
    assert worker == ["anthropic", "openai"]


def test_the_web_application_loads_them_as_it_starts(settings_env: dict[str, str]) -> None:
    setup, web = _loaded_after(settings_env, "import cognitionos.wsgi")
    assert setup == []
    assert web == ["anthropic", "openai"]
