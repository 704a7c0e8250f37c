"""Vectors stored in the table's own pages (STORAGE MAIN) instead of out of line in its TOAST table.

A vector of 1,536 dimensions is 6,152 bytes: over PostgreSQL's 2 KB threshold, so with pgvector's
default storage (EXTENDED) every one went to the TOAST table (floats don't compress), and each
distance computed outside the HNSW index (exact search over a small knowledge base, the filtered
plan's fallback) first fetched its four TOAST chunks through the TOAST index. MAIN keeps a vector up
to a page (2,000 dimensions and fewer) in its row: exact search over 1,000 such vectors measured
3.5x faster (bench/knowledge.py, docs/knowledge.md). Rows written before this stay where they are
until rewritten (VACUUM FULL, or re-embedding)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0004_fewer_indexes")]

    operations = [
        migrations.RunSQL(
            sql="ALTER TABLE knowledge_chunkembedding ALTER COLUMN embedding SET STORAGE MAIN",
            reverse_sql="ALTER TABLE knowledge_chunkembedding ALTER COLUMN embedding SET STORAGE EXTENDED",
            elidable=False,
        ),
    ]
