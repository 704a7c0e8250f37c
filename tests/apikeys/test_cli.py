"""`cognitionos apikey create` and `cognitionos budget set`, run as a user runs them."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.apikeys.keys import key_hash, key_split
from apps.apikeys.models import ApiKey
from apps.apikeys.selectors import apikey_resolve
from apps.llm.models import Budget
from tests.conftest import LiveDb
from tests.support.processes import run_cognitionos

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_apikey_create_prints_the_key_once_and_stores_only_its_hash(live_db: LiveDb) -> None:
    organization = live_db.organization(slug="keyholder")
    result = run_cognitionos("apikey", "create", "--tenant", "keyholder", "--json")
    assert result.returncode == 0, result.stderr
    key = json.loads(result.stdout)["key"]
    parts = key_split(key)
    assert parts is not None
    stored = ApiKey.objects.get(organization=organization)
    assert stored.prefix == parts[0] and stored.secret_hash == key_hash(parts[1])
    assert parts[1] not in stored.secret_hash and key not in str(stored.__dict__)
    resolved = apikey_resolve(key)
    assert resolved is not None and resolved[0].pk == organization.pk


def test_apikey_create_with_scopes_expiry_and_a_bound_user(live_db: LiveDb) -> None:
    organization = live_db.organization(slug="scoped")
    result = run_cognitionos(
        "apikey", "create", "--tenant", "scoped", "--scope", "jobs:read", "--scope", "llm:invoke",
        "--expires", "30d", "--user", "OWNER@scoped.example.com", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["scopes"] == ["jobs:read", "llm:invoke"] and printed["user"] == "owner@scoped.example.com"
    stored = ApiKey.objects.select_related("user").get(organization=organization)
    assert stored.scopes == ["jobs:read", "llm:invoke"] and stored.user is not None
    assert stored.expires_at is not None
    assert dt.timedelta(days=29) < stored.expires_at - timezone.now() <= dt.timedelta(days=30)
    resolved = apikey_resolve(printed["key"])
    assert resolved is not None and resolved[1].permissions == frozenset({"jobs:read", "llm:invoke"})
    default = run_cognitionos("apikey", "create", "--tenant", "scoped", "--json")
    assert ApiKey.objects.get(pk=json.loads(default.stdout)["id"]).scopes == ["admin"]


def test_apikey_create_refuses_bad_scopes_expiries_and_users(live_db: LiveDb) -> None:
    live_db.organization(slug="refusing")
    unknown_scope = run_cognitionos("apikey", "create", "--tenant", "refusing", "--scope", "jobs:delete")
    assert unknown_scope.returncode == 2 and "invalid choice" in unknown_scope.stderr
    bad_expiry = run_cognitionos("apikey", "create", "--tenant", "refusing", "--expires", "soon")
    assert bad_expiry.returncode == 2 and "--expires" in bad_expiry.stderr
    past = run_cognitionos("apikey", "create", "--tenant", "refusing", "--expires", "2001-01-01")
    assert past.returncode == 2 and "future" in past.stderr
    nobody = run_cognitionos("apikey", "create", "--tenant", "refusing", "--user", "nobody@example.com")
    assert nobody.returncode == 2 and "no user" in nobody.stderr
    assert not ApiKey.objects.filter(organization__slug="refusing").exists()


def test_apikey_create_for_an_unknown_tenant_exits_2(live_db: LiveDb) -> None:
    result = run_cognitionos("apikey", "create", "--tenant", "nobody-here")
    assert result.returncode == 2 and "no organization" in result.stderr


def test_budget_set_from_the_command_line(live_db: LiveDb) -> None:
    organization = live_db.organization(slug="budgeted")
    result = run_cognitionos(
        "budget",
        "set",
        "--tenant",
        "budgeted",
        "--scope",
        "organization",
        "--period",
        "month",
        "--limit-usd",
        "25.50",
        "--soft-percent",
        "80",
        "--hard",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert Decimal(json.loads(result.stdout)["limit_usd"]) == Decimal("25.5")
    with schema_context(organization.schema_name):
        budget = Budget.objects.get()
        assert (budget.limit_usd, budget.soft_percent, budget.hard) == (Decimal("25.5"), 80, True)
    bad = run_cognitionos(
        "budget", "set", "--tenant", "budgeted", "--scope", "key", "--period", "day", "--limit-usd", "1"
    )
    assert bad.returncode == 2 and "needs the key's id" in bad.stderr
