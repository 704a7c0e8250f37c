"""Fewer relations per organization (issue 15): drop indexes no query needs. Each one is either
a prefix of another index on the same table, a duplicate, or a varchar_pattern_ops index Django
adds for LIKE 'x%' on a unique CharField that no query filters with LIKE. The reverse recreates
each index as it was."""

import django.db.models.deletion
from django.db import migrations, models


def _drop(name: str, table: str, columns: str) -> migrations.RunSQL:
    """Drop one index (the comment above each call says why nothing needs it); the reverse recreates it."""
    return migrations.RunSQL(
        sql=f"DROP INDEX {name}",
        reverse_sql=f"CREATE INDEX {name} ON {table} USING btree ({columns})",
        elidable=False,
    )


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0003_knowledge_bases")]

    operations = [
        # Prefix of knowledge_chunk_ordinal_unique (document_id, ordinal).
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='chunk',
                    name='document',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='chunks', to='knowledge.document'),
                ),
            ],
            database_operations=[_drop('knowledge_chunk_document_id_9855d8fa', 'knowledge_chunk', 'document_id')],
        ),
        # Same column as knowledge_chunk_kb (knowledge_base_id), which stays.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='chunk',
                    name='knowledge_base',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='knowledge.knowledgebase'),
                ),
            ],
            database_operations=[_drop('knowledge_chunk_knowledge_base_id_4147c79b', 'knowledge_chunk', 'knowledge_base_id')],
        ),
        # Same column as knowledge_vector_chunk (chunk_id), which stays.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='chunkembedding',
                    name='chunk',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='embeddings', to='knowledge.chunk'),
                ),
            ],
            database_operations=[_drop('knowledge_chunkembedding_chunk_id_9ece30ed', 'knowledge_chunkembedding', 'chunk_id')],
        ),
        # Prefix of knowledge_vector_once_per_set (embedding_set_id, chunk_id).
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='chunkembedding',
                    name='embedding_set',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='vectors', to='knowledge.embeddingset'),
                ),
            ],
            database_operations=[_drop('knowledge_chunkembedding_embedding_set_id_45b5dbaa', 'knowledge_chunkembedding', 'embedding_set_id')],
        ),
        # Prefix of knowledge_document_listed (knowledge_base_id, created_at DESC, id DESC).
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='document',
                    name='knowledge_base',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='documents', to='knowledge.knowledgebase'),
                ),
            ],
            database_operations=[_drop('knowledge_document_knowledge_base_id_da1ff814', 'knowledge_document', 'knowledge_base_id')],
        ),
    ]
