"""The `cognitionos` command as a user runs it: a subprocess against the test database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.db import connection

from apps.tenants.models import Organization
from tests.conftest import LiveDb
from tests.support.processes import run_cognitionos

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_tenant_create_json_then_list(live_db: LiveDb) -> None:
    result = run_cognitionos(
        "tenant",
        "create",
        "wonka",
        "--name",
        "Wonka Industries",
        "--owner",
        "willy@wonka.example.com",
        "--plan",
        "pro",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    live_db.track(Organization.objects.get(slug="wonka"))
    assert created["slug"] == "wonka" and created["plan"] == "pro" and created["domain"] == "wonka.localhost"

    listing = run_cognitionos("tenant", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    slugs = [org["slug"] for org in json.loads(listing.stdout)]
    assert "wonka" in slugs and "public" not in slugs


@pytest.mark.parametrize(
    ("slug", "reason"), [("Not_Dns", "invalid slug"), ("www", "reserved"), ("tenant-a", "already taken")]
)
def test_tenant_create_refuses_bad_slugs_with_status_2_and_one_line(live_db: LiveDb, slug: str, reason: str) -> None:
    before = Organization.objects.count()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_namespace")
        schemas_before = cursor.fetchone()[0]
    result = run_cognitionos("tenant", "create", slug, "--name", "X", "--owner", "x@example.com")
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and reason in result.stderr
    assert Organization.objects.count() == before
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_namespace")
        assert cursor.fetchone()[0] == schemas_before
