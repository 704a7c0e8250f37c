from django.db import models
from pgvector.django import HnswIndex, VectorField

# Dimensions of the platform's embedding model (OpenAI text-embedding-3-small).
EMBEDDING_DIMENSIONS = 1536


class Document(models.Model):
    title = models.CharField(max_length=300)
    source = models.CharField(max_length=500, blank=True, default="")
    created_by_id = models.CharField(max_length=64, blank=True, default="")
    created_by_label = models.CharField(max_length=254, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.title


class Chunk(models.Model):
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS, null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["document", "ordinal"], name="knowledge_chunk_ordinal_unique"),
        ]
        indexes = [
            HnswIndex(
                name="knowledge_chunk_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.ordinal}"
