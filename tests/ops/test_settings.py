from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from cognitionos.settings.celery import kombu_url
from cognitionos.settings.env import env_bool, env_int, env_list, env_str

ROOT = Path(__file__).resolve().parents[2]


def test_production_settings_pass_check_deploy_without_warnings() -> None:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "DEBUG", "HTTPS", "CELERY_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="cognitionos.settings.production",
        SECRET_KEY="p" + "roduction-secret-" * 4 + "9fK2",
        DATABASE_URL="postgresql://cognitionos:secret@db.internal:5432/cognitionos",
        # No such database: dj-stripe's checks query it and give up after the pool's timeout.
        DATABASE_POOL_TIMEOUT="1",
        REDIS_URL="redis://cache.internal:6379/0",
        CREDENTIALS_ENCRYPTION_KEYS="k1:" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode(),
        BASE_DOMAIN="cognitionos.example.com",
        ALLOWED_HOSTS="cognitionos.example.com,.cognitionos.example.com",
        METRICS_TOKEN="m" + "etrics-token-" * 3 + "7Qx",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_environment_readers_refuse_malformed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAG", "maybe")
    monkeypatch.setenv("COUNT", "ten")
    monkeypatch.setenv("HOSTS", " a.example.com, ,b.example.com ")
    with pytest.raises(ImproperlyConfigured, match="FLAG must be true or false"):
        env_bool("FLAG", False)
    with pytest.raises(ImproperlyConfigured, match="COUNT must be an integer"):
        env_int("COUNT", 1)
    with pytest.raises(ImproperlyConfigured, match="MISSING_VARIABLE is required"):
        env_str("MISSING_VARIABLE")
    assert env_list("HOSTS", []) == ["a.example.com", "b.example.com"]


def test_kombu_spells_unix_sockets_its_own_way() -> None:
    assert kombu_url("unix:///data/redis.sock?db=3") == "redis+socket:///data/redis.sock?virtual_host=3"
    assert kombu_url("redis://cache:6379/1") == "redis://cache:6379/1"


def test_cache_keys_carry_the_tenant() -> None:
    # apps.accounts.cache: the tenant's schema in every key but allauth's platform-wide rate limits.
    from django.core.cache import cache

    from apps.tenants.connection import tenant_connection

    assert settings.CACHES["default"]["KEY_FUNCTION"] == "apps.accounts.cache.make_key"
    assert cache.make_key("anything").startswith(f"{tenant_connection().schema_name}:")
    assert cache.make_key("allauth:rl:account:login_failed:5/300s/key:x").startswith("global:")


def test_broker_outlives_the_longest_job() -> None:
    assert settings.CELERY_TASK_ACKS_LATE and settings.CELERY_TASK_REJECT_ON_WORKER_LOST
    assert settings.CELERY_WORKER_PREFETCH_MULTIPLIER == 1
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] > settings.LONGEST_JOB_SECONDS


def test_database_pool_is_bounded() -> None:
    options: Any = settings.DATABASES["default"]["OPTIONS"]
    pool = options["pool"]
    assert 0 < pool["max_size"] <= 50
