"""What each organization adds to PostgreSQL's catalogs, pinned.

Every organization schema repeats the template's relations, so one more index in a tenant app is
10,000 more rows in pg_class at 10,000 organizations (issue 15). A migration that adds relations
to the tenant schema fails here until the figure below is updated on purpose, in the same commit.
"""

from __future__ import annotations

from django.db import connection
from psycopg import sql

from apps.tenants.models import Organization
from apps.tenants.selectors import schema_catalog_counts
from apps.tenants.template import template_schema_name

# Rows in pg_class per organization schema (TOAST tables and their indexes live in pg_toast but
# belong to the organization all the same), plus the row and array types of its tables and the
# triggers on them (four internal ones per foreign key). Before issue 15's removals: 120 indexes,
# 216 relations.
EXPECTED = {
    "tables": 29,
    "indexes": 101,
    "sequences": 19,
    "other_relations": 0,
    "toast_tables": 24,
    "toast_indexes": 24,
    "relations": 197,
    "types": 58,
    "triggers": 90,
}


def _pinned(counts: dict[str, int]) -> dict[str, int]:
    return {kind: counts[kind] for kind in EXPECTED}


def test_template_adds_the_pinned_number_of_relations(db: None) -> None:
    counts = schema_catalog_counts(template_schema_name())
    assert _pinned(counts) == EXPECTED, (
        f"the tenant template's catalog footprint changed: {counts}. If the new relations are needed, "
        "update EXPECTED in tests/tenants/test_catalog_footprint.py (each is repeated in every organization)."
    )


def test_an_organization_adds_what_the_template_holds(db: None) -> None:
    organization = Organization.objects.get(slug="tenant-a")
    counts = schema_catalog_counts(organization.schema_name)
    template = schema_catalog_counts(template_schema_name())
    assert counts == template, f"organization {counts} != template {template}"
    assert counts["relations"] == sum(
        counts[kind] for kind in ("tables", "indexes", "sequences", "other_relations", "toast_tables", "toast_indexes")
    )


def test_counts_see_a_new_index_and_only_in_its_schema(db: None) -> None:
    """The counts come from the catalogs, not from a list: an index added by hand shows up."""
    organization = Organization.objects.get(slug="tenant-a")
    other = Organization.objects.get(slug="tenant-b")
    before, other_before = schema_catalog_counts(organization.schema_name), schema_catalog_counts(other.schema_name)
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("CREATE INDEX footprint_probe ON {}.llm_callcontent (created_at, id)")
            .format(sql.Identifier(organization.schema_name))
            .as_string()
        )
    after = schema_catalog_counts(organization.schema_name)
    assert after["indexes"] == before["indexes"] + 1
    assert after["relations"] == before["relations"] + 1
    assert schema_catalog_counts(other.schema_name) == other_before
