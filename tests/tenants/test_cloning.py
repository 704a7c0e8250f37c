from __future__ import annotations

import random
import re

import pytest
from django.db import connection, transaction
from django.db.models.functions import Cast
from django_tenants.utils import schema_context
from pgvector.django import CosineDistance, VectorField

from apps.knowledge.models import (
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    Chunk,
    ChunkEmbedding,
    Document,
    EmbeddingSet,
    KnowledgeBase,
)
from apps.tenants.cloning import UnsupportedSchemaObject, schema_script_render
from tests.factories import organization_make

CATALOG_QUERIES = {
    "columns": """
        SELECT c.relname, a.attname, rank() OVER (PARTITION BY c.oid ORDER BY a.attnum),
               format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,
               pg_get_expr(d.adbin, d.adrelid), a.attcollation, a.attstorage, c.relpersistence, c.reloptions
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = %s AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
        """,
    "sequences": """
        SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache,
               s.seqcycle
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s
        """,
    "constraints": """
        SELECT t.relname, con.conname, con.contype, pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_class t ON t.oid = con.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = %s
        """,
    "indexes": """
        SELECT t.relname, i.relname, replace(pg_get_indexdef(i.oid), n.nspname || '.', '')
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = %s
        """,
    "triggers": """
        SELECT t.relname, tg.tgname, replace(pg_get_triggerdef(tg.oid), n.nspname || '.', '')
        FROM pg_trigger tg JOIN pg_class t ON t.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = %s AND NOT tg.tgisinternal
        """,
}


def _same_modulo_casts(definition: str) -> str:
    """A CHECK definition without its casts and parentheses. The clone's constraints are made from
    the template's printed definitions, and PostgreSQL parses `(ARRAY['a'::varchar])::text[]` back
    as `ARRAY[('a'::varchar)::text]`: the same test, another tree."""
    return re.sub(r"[()]", "", re.sub(r"::[a-z ]+(\[\])?", "", definition))


def _catalog(schema: str) -> dict[str, set[tuple[str, ...]]]:
    with connection.cursor() as cursor:
        result = {}
        for name, query in CATALOG_QUERIES.items():
            # Constraint definitions name tables relative to the search path: read both from public.
            cursor.execute("SET LOCAL search_path = public")
            cursor.execute(query, [schema])
            rows = {tuple(str(v).replace(f"{schema}.", "") for v in row) for row in cursor.fetchall()}
            if name == "constraints":
                rows = {(*row[:3], _same_modulo_casts(row[3]) if row[2] == "c" else row[3]) for row in rows}
            result[name] = rows
        return result


def test_clone_is_the_template_table_for_table_index_for_index(db: None) -> None:
    organization = organization_make(slug="mirror")
    template, clone = _catalog("_template"), _catalog(organization.schema_name)
    for kind in CATALOG_QUERIES:
        assert clone[kind] == template[kind], kind
    assert "knowledge_vector_hnsw_1536" in {index for _, index, _ in template["indexes"]}
    assert {trigger for _, trigger, _ in template["triggers"]} == {"audit_event_append_only", "audit_event_no_truncate"}


def test_clone_keeps_the_partial_hnsw_index_of_each_dimension_count(db: None) -> None:
    organization = organization_make(slug="vectors")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = %s AND indexname LIKE 'knowledge_vector_hnsw_%%'",
            [organization.schema_name],
        )
        indexes = dict(cursor.fetchall())
    assert set(indexes) == {f"knowledge_vector_hnsw_{n}" for n in (256, 384, 512, 768, 1024, 1536)}
    indexdef = indexes["knowledge_vector_hnsw_1536"]
    assert "USING hnsw" in indexdef and "vector_cosine_ops" in indexdef
    assert f"m='{HNSW_M}', ef_construction='{HNSW_EF_CONSTRUCTION}'" in indexdef
    assert "(embedding)::vector(1536)" in indexdef and "WHERE (dimensions = 1536)" in indexdef


def _knowledge_base_with_document(name: str, *, dimensions: int) -> tuple[KnowledgeBase, EmbeddingSet, Document]:
    """In the current schema: a knowledge base, its embedding set and one empty document."""
    base = KnowledgeBase.objects.create(name=name, embedding_model="text-embedding-3-small", dimensions=dimensions)
    vectors = EmbeddingSet.objects.create(
        knowledge_base=base, embedding_model="text-embedding-3-small", dimensions=dimensions, principal_kind="system"
    )
    document = Document.objects.create(
        knowledge_base=base,
        title=name,
        filename="d.txt",
        content_type="text/plain",
        size_bytes=1,
        sha256="0" * 64,
        principal_kind="system",
    )
    return base, vectors, document


def test_cloned_vector_table_stores_and_ranks_embeddings(db: None) -> None:
    organization = organization_make(slug="ranked")
    with schema_context(organization.schema_name):
        base, vectors, document = _knowledge_base_with_document("Handbook", dimensions=384)
        for ordinal, (text, vector) in enumerate([("north", [1.0] + [0.0] * 383), ("east", [0.0, 1.0] + [0.0] * 382)]):
            chunk = Chunk.objects.create(
                document=document, knowledge_base=base, ordinal=ordinal, text=text, token_estimate=1
            )
            ChunkEmbedding.objects.create(embedding_set=vectors, chunk=chunk, dimensions=384, embedding=vector)
        query = [0.9, 0.1] + [0.0] * 382
        nearest = (
            ChunkEmbedding.objects.filter(dimensions=384, embedding_set=vectors)
            .order_by(CosineDistance(Cast("embedding", VectorField(dimensions=384)), query))
            .values_list("chunk__text", flat=True)
        )
        assert list(nearest) == ["north", "east"]
        chunk = Chunk.objects.get(text="north")
        with pytest.raises(Exception, match="knowledge_vector_dimensions_match"), transaction.atomic():
            ChunkEmbedding.objects.create(embedding_set=vectors, chunk=chunk, dimensions=384, embedding=[1.0, 2.0])


def test_a_new_organizations_vectors_are_stored_in_their_rows_not_out_of_line(db: None) -> None:
    """knowledge 0005's STORAGE MAIN is carried into every new schema: a 1,536-dimension vector
    (6 KB, over the 2 KB TOAST threshold) stays in its row, and nothing goes to the TOAST table."""
    organization = organization_make(slug="inline")
    rng = random.Random(5)  # floats as embeddings have them: pglz finds nothing to compress
    with schema_context(organization.schema_name):
        base, vectors, document = _knowledge_base_with_document("Wide", dimensions=1536)
        chunk = Chunk.objects.create(document=document, knowledge_base=base, ordinal=0, text="w", token_estimate=1)
        ChunkEmbedding.objects.create(
            embedding_set=vectors, chunk=chunk, dimensions=1536, embedding=[rng.uniform(-1, 1) for _ in range(1536)]
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT a.attstorage, c.reltoastrelid::regclass::text FROM pg_attribute a"
                " JOIN pg_class c ON c.oid = a.attrelid"
                " WHERE a.attrelid = 'knowledge_chunkembedding'::regclass AND a.attname = 'embedding'"
            )
            storage, toast_table = cursor.fetchone()
            cursor.execute(f"SELECT count(*) FROM {toast_table}")
            toasted = cursor.fetchone()[0]
            cursor.execute("SELECT pg_column_size(embedding) FROM knowledge_chunkembedding")
            size = cursor.fetchone()[0]
    assert (storage, toasted, size) == ("m", 0, 4 + 4 + 4 * 1536)


def test_clone_refuses_object_kinds_it_cannot_copy(db: None) -> None:
    with connection.cursor() as cursor:
        cursor.execute("CREATE VIEW _template.recent_events AS SELECT * FROM _template.audit_auditevent")
        with pytest.raises(UnsupportedSchemaObject, match="recent_events"), transaction.atomic():
            schema_script_render(cursor=cursor, source="_template")
