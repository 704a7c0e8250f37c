"""The HNSW indexes rebuilt with m 32 / ef_construction 512 (were 24 / 128): recall@10 0.95 at
1,536 dimensions with ef_search about 115 instead of 300, so p95 under 10 ms instead of about 25
(bench/knowledge.py, docs/knowledge.md). Each index is built anew from the schema's vectors: for a
schema with many of them this takes minutes (100,000 x 1,536: about 10 with 2 GB of
maintenance_work_mem), during which that organization's vector writes and searches wait."""

import django.contrib.postgres.indexes
import django.db.models.functions.comparison
import pgvector.django.indexes
import pgvector.django.vector
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("knowledge", "0005_vectors_stored_inline"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="chunkembedding",
            name="knowledge_vector_hnsw_256",
        ),
        migrations.RemoveIndex(
            model_name="chunkembedding",
            name="knowledge_vector_hnsw_384",
        ),
        migrations.RemoveIndex(
            model_name="chunkembedding",
            name="knowledge_vector_hnsw_512",
        ),
        migrations.RemoveIndex(
            model_name="chunkembedding",
            name="knowledge_vector_hnsw_768",
        ),
        migrations.RemoveIndex(
            model_name="chunkembedding",
            name="knowledge_vector_hnsw_1024",
        ),
        migrations.RemoveIndex(
            model_name="chunkembedding",
            name="knowledge_vector_hnsw_1536",
        ),
        migrations.AddIndex(
            model_name="chunkembedding",
            index=pgvector.django.indexes.HnswIndex(
                django.contrib.postgres.indexes.OpClass(
                    django.db.models.functions.comparison.Cast(
                        "embedding", pgvector.django.vector.VectorField(dimensions=256)
                    ),
                    name="vector_cosine_ops",
                ),
                condition=models.Q(("dimensions", 256)),
                ef_construction=512,
                m=32,
                name="knowledge_vector_hnsw_256",
            ),
        ),
        migrations.AddIndex(
            model_name="chunkembedding",
            index=pgvector.django.indexes.HnswIndex(
                django.contrib.postgres.indexes.OpClass(
                    django.db.models.functions.comparison.Cast(
                        "embedding", pgvector.django.vector.VectorField(dimensions=384)
                    ),
                    name="vector_cosine_ops",
                ),
                condition=models.Q(("dimensions", 384)),
                ef_construction=512,
                m=32,
                name="knowledge_vector_hnsw_384",
            ),
        ),
        migrations.AddIndex(
            model_name="chunkembedding",
            index=pgvector.django.indexes.HnswIndex(
                django.contrib.postgres.indexes.OpClass(
                    django.db.models.functions.comparison.Cast(
                        "embedding", pgvector.django.vector.VectorField(dimensions=512)
                    ),
                    name="vector_cosine_ops",
                ),
                condition=models.Q(("dimensions", 512)),
                ef_construction=512,
                m=32,
                name="knowledge_vector_hnsw_512",
            ),
        ),
        migrations.AddIndex(
            model_name="chunkembedding",
            index=pgvector.django.indexes.HnswIndex(
                django.contrib.postgres.indexes.OpClass(
                    django.db.models.functions.comparison.Cast(
                        "embedding", pgvector.django.vector.VectorField(dimensions=768)
                    ),
                    name="vector_cosine_ops",
                ),
                condition=models.Q(("dimensions", 768)),
                ef_construction=512,
                m=32,
                name="knowledge_vector_hnsw_768",
            ),
        ),
        migrations.AddIndex(
            model_name="chunkembedding",
            index=pgvector.django.indexes.HnswIndex(
                django.contrib.postgres.indexes.OpClass(
                    django.db.models.functions.comparison.Cast(
                        "embedding", pgvector.django.vector.VectorField(dimensions=1024)
                    ),
                    name="vector_cosine_ops",
                ),
                condition=models.Q(("dimensions", 1024)),
                ef_construction=512,
                m=32,
                name="knowledge_vector_hnsw_1024",
            ),
        ),
        migrations.AddIndex(
            model_name="chunkembedding",
            index=pgvector.django.indexes.HnswIndex(
                django.contrib.postgres.indexes.OpClass(
                    django.db.models.functions.comparison.Cast(
                        "embedding", pgvector.django.vector.VectorField(dimensions=1536)
                    ),
                    name="vector_cosine_ops",
                ),
                condition=models.Q(("dimensions", 1536)),
                ef_construction=512,
                m=32,
                name="knowledge_vector_hnsw_1536",
            ),
        ),
    ]
