"""Schemas built ahead of sign-ups (apps.tenants.services.ready_schemas_refill): a sign-up renames
one of the template's current state instead of running the script, keeps every guarantee of a
creation, and never gets a schema of an older state."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.tenants.models import Organization, ReadySchema
from apps.tenants.services import READY_REFILL_LOCK, organization_create, ready_schemas_refill
from apps.tenants.tasks import ready_schemas_keep_filled
from tests.factories import TEST_ACTOR, organization_make
from tests.tenants.test_cloning import CATALOG_QUERIES, _catalog
from tests.tenants.test_provisioning import _schema_exists
from tests.tenants.test_rollout import _dsn


@pytest.fixture
def pool(settings: Any) -> Any:
    settings.TENANT_READY_SCHEMAS = 2
    return settings


def _ready_names() -> list[str]:
    return list(ReadySchema.objects.order_by("id").values_list("schema_name", flat=True))


def _relations(schema: str) -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s", [schema]
        )
        return {row[0] for row in cursor.fetchall()}


def test_sign_ups_take_ready_schemas_equal_to_the_template(db: None, pool: Any) -> None:
    assert ready_schemas_refill() == 2
    first, second = _ready_names()
    assert _schema_exists(first) and _schema_exists(second)

    with CaptureQueriesContext(connection) as queries:
        acme = organization_make(slug="ready-acme")
    statements = [q["sql"] for q in queries.captured_queries]
    assert any(s.startswith(f'ALTER SCHEMA "{first}" RENAME TO "org_ready_acme"') for s in statements)
    assert not [s for s in statements if "CREATE TABLE" in s or "pg_class" in s]
    globex = organization_make(slug="ready-globex")

    assert _ready_names() == []
    assert not _schema_exists(first) and not _schema_exists(second)
    template = _catalog("_template")
    for organization in (acme, globex):
        clone = _catalog(organization.schema_name)
        for kind in CATALOG_QUERIES:
            assert clone[kind] == template[kind], (organization.slug, kind)
    # Two organizations, two sets of relations: nothing of one is the other's.
    acme_relations, globex_relations = _relations(acme.schema_name), _relations(globex.schema_name)
    assert len(acme_relations) == len(globex_relations) > 100
    assert acme_relations.isdisjoint(globex_relations)
    assert acme.migration_state == globex.migration_state != ""

    # With none ready, a sign-up runs the script, as without the pool.
    assert _schema_exists(organization_make(slug="ready-third").schema_name)


def test_a_failed_sign_up_leaves_its_ready_schema_ready(db: None, pool: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ready_schemas_refill(size=1)
    (ready,) = _ready_names()

    def fail(**kwargs: object) -> None:
        raise RuntimeError("membership store down")

    monkeypatch.setattr("apps.tenants.services.membership_create", fail)
    with pytest.raises(RuntimeError, match="membership store down"):
        organization_create(slug="ready-half", name="Half", owner_email="o@half.example.com", actor=TEST_ACTOR)

    assert not Organization.objects.filter(slug="ready-half").exists()
    assert not _schema_exists("org_ready_half")
    assert _ready_names() == [ready] and _schema_exists(ready)


def test_ready_schemas_of_an_older_template_state_are_never_handed_out(db: None, pool: Any) -> None:
    ready_schemas_refill(size=1)
    (older,) = _ready_names()
    ReadySchema.objects.update(fingerprint="0" * 64)  # as if the template migrated since it was built

    organization = organization_make(slug="ready-newer")
    assert _schema_exists(organization.schema_name)
    assert _ready_names() == [older] and _schema_exists(older)  # not taken

    assert ready_schemas_refill(size=1) == 1
    assert not _schema_exists(older)
    (newer,) = _ready_names()
    assert newer != older and ReadySchema.objects.get().fingerprint == organization.migration_state


def test_one_refill_at_a_time(db: None, pool: Any) -> None:
    with psycopg.connect(_dsn(), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [READY_REFILL_LOCK])  # another refill is running
        assert ready_schemas_refill() == 0
        assert _ready_names() == []
        # Released before the connection closes: a closed connection's server process lets its
        # locks go on its own time, which a loaded machine can put after the next statement.
        other.execute("SELECT pg_advisory_unlock(%s)", [READY_REFILL_LOCK])
    assert ready_schemas_refill() == 2


def test_the_beat_task_fills_the_pool_to_the_setting(db: None, pool: Any) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["tenants-ready-schemas"]
    assert entry["task"] == ready_schemas_keep_filled.name
    assert ready_schemas_keep_filled.apply().get() == 2
    assert ready_schemas_keep_filled.apply().get() == 0  # full: nothing to build
    assert len(_ready_names()) == 2
