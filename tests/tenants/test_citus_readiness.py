"""What would block moving organization schemas to Citus workers (docs/deploy.md, "Past one
PostgreSQL server"): a tenant table must never reference a public one, nor a public table a tenant
one, in the ORM or in the database. Citus' schema-based sharding refuses foreign keys across
distributed schemas, and a join across the boundary turns one routed query into a cross-node one.
"""

from __future__ import annotations

from django.apps import apps
from django.conf import settings
from django.db import connection
from django.db.models import Model

from apps.tenants.template import template_schema_name


def _tenant_only_apps() -> set[str]:
    return {name for name in settings.TENANT_APPS if name not in settings.SHARED_APPS}


def _boundary_crossings(tenant_apps: set[str]) -> list[str]:
    def in_tenant(model: type[Model]) -> bool:
        return apps.get_app_config(model._meta.app_label).name in tenant_apps

    crossings = []
    for model in apps.get_models(include_auto_created=True):
        for field in model._meta.get_fields(include_hidden=True):
            related = field.related_model
            if not (field.is_relation and field.concrete and isinstance(related, type)):
                continue
            if issubclass(related, Model) and in_tenant(model) != in_tenant(related):
                crossings.append(f"{model._meta.label}.{field.name} -> {related._meta.label}")
    return crossings


def test_no_model_relation_crosses_the_tenant_public_boundary() -> None:
    assert _tenant_only_apps(), "no tenant apps configured"
    crossings = _boundary_crossings(_tenant_only_apps())
    assert not crossings, (
        "tenant rows refer to public rows by id plus a stored label, never by a relation "
        f"(a foreign key across schemas blocks Citus schema-based sharding): {crossings}"
    )


def test_the_scan_finds_a_relation_across_the_boundary() -> None:
    """Were knowledge bases public, an agent's knowledge bases would cross: the scan says so."""
    crossings = _boundary_crossings(_tenant_only_apps() - {"apps.knowledge"})
    assert "agents.Agent.knowledge_bases -> knowledge.KnowledgeBase" in crossings


def test_template_foreign_keys_stay_inside_the_schema(db: None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT format('%%s.%%s -> %%s', t.relname, con.conname, con.confrelid::regclass)
            FROM pg_constraint con
            JOIN pg_class t ON t.oid = con.conrelid JOIN pg_class r ON r.oid = con.confrelid
            JOIN pg_namespace n ON n.oid = t.relnamespace
            WHERE con.contype = 'f' AND n.nspname = %s AND r.relnamespace <> t.relnamespace
            """,
            [template_schema_name()],
        )
        outside = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            "SELECT count(*) FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace"
            " WHERE con.contype = 'f' AND n.nspname = %s",
            [template_schema_name()],
        )
        inside = cursor.fetchone()[0]
    assert inside > 0  # the query sees the template's foreign keys at all
    assert outside == [], outside
