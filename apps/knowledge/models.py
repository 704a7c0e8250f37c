"""Knowledge bases: documents uploaded by an organization, cut into chunks, embedded through the
governed embeddings path and searched by meaning (pgvector, HNSW) and by words (full text).

Vectors live apart from chunks, in embedding sets: a knowledge base answers from its active set
while a new set (another embedding model or dimension count) is built in the background, then
switches to it in one update. The vector column has no fixed dimension count; each supported count
has its own partial HNSW index over `embedding::vector(N)`, which a query uses by casting the same
way and filtering on `dimensions`."""

from __future__ import annotations

import uuid

from django.contrib.postgres.indexes import GinIndex, OpClass
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.db.models.functions import Cast, Lower, Now
from pgvector.django import HnswIndex, VectorField

from apps.work.models import WorkItem, work_item_constraints

# pgvector 0.6.2 indexes HNSW up to 2,000 dimensions; larger embeddings are asked for reduced
# (the `dimensions` parameter of OpenAI's text-embedding-3 models).
SUPPORTED_DIMENSIONS = (256, 384, 512, 768, 1024, 1536)
DEFAULT_DIMENSIONS = 1536

# Chunk sizes in (estimated) tokens.
MIN_CHUNK_TOKENS = 64
MAX_CHUNK_TOKENS = 2000
DEFAULT_CHUNK_TOKENS = 400
DEFAULT_CHUNK_OVERLAP_TOKENS = 50

# HNSW build parameters, chosen by bench/knowledge.py (docs/knowledge.md, Performance): at 1,536
# dimensions recall@10 0.95 needs ef_search about 115 with this graph, 140 with (32, 256) and 300
# with (24, 128), and fewer candidates cost less per query than a wider graph (m 48 was slower for
# the same recall, m 16 needed far more candidates). The price is build time (about 10 minutes
# for 100,000 x 1,536) and slower inserts. `ef_search` is set per query (apps.knowledge.search).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 512


class KnowledgeBase(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=500, blank=True, default="")
    # What new documents are embedded with: the active set's model, or the one being built.
    embedding_model = models.CharField(max_length=100)
    dimensions = models.PositiveSmallIntegerField(default=DEFAULT_DIMENSIONS)
    chunk_tokens = models.PositiveSmallIntegerField(default=DEFAULT_CHUNK_TOKENS)
    chunk_overlap_tokens = models.PositiveSmallIntegerField(default=DEFAULT_CHUNK_OVERLAP_TOKENS)
    # The set search answers from; null only while the first set is created with the base.
    active_set = models.ForeignKey("EmbeddingSet", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(db_default=Now())
    created_by_id = models.CharField(max_length=64, blank=True, default="")
    created_by_label = models.CharField(max_length=254, blank=True, default="")

    class Meta:
        ordering = ("name",)
        constraints = [
            models.UniqueConstraint(Lower("name"), name="knowledge_kb_name_unique"),
            models.CheckConstraint(
                condition=models.Q(dimensions__in=SUPPORTED_DIMENSIONS), name="knowledge_kb_dimensions_supported"
            ),
            models.CheckConstraint(
                condition=models.Q(chunk_tokens__gte=MIN_CHUNK_TOKENS, chunk_tokens__lte=MAX_CHUNK_TOKENS),
                name="knowledge_kb_chunk_tokens_bounded",
            ),
            models.CheckConstraint(
                condition=models.Q(chunk_overlap_tokens__lte=models.F("chunk_tokens") / 2),
                name="knowledge_kb_overlap_at_most_half",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class EmbeddingSet(WorkItem):
    """The vectors of one knowledge base under one embedding model and dimension count. Building
    it is durable work (apps.work): a knowledge base's first set has nothing to embed and succeeds
    at once; a later one (the model changed) embeds every chunk, then becomes the active set."""

    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="embedding_sets")
    embedding_model = models.CharField(max_length=100)
    dimensions = models.PositiveSmallIntegerField()
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta(WorkItem.Meta):
        constraints = [
            *work_item_constraints(),
            models.CheckConstraint(
                condition=models.Q(dimensions__in=SUPPORTED_DIMENSIONS), name="knowledge_set_dimensions_supported"
            ),
            # At most one set of a knowledge base is being built at a time.
            models.UniqueConstraint(
                fields=["knowledge_base"],
                name="knowledge_set_one_building",
                condition=models.Q(status="queued") | models.Q(status="running"),
            ),
        ]


class DocumentStage(models.TextChoices):
    """How far ingestion got (the work status says whether it is still going)."""

    UPLOADED = "uploaded"
    PARSED = "parsed"
    CHUNKED = "chunked"
    EMBEDDED = "embedded"
    INDEXED = "indexed"


class Document(WorkItem):
    """An uploaded file and its ingestion (durable work: parse, chunk, embed, index)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # db_index=False: knowledge_document_listed (knowledge_base, -created_at, -id) serves it.
    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="documents", db_index=False
    )
    title = models.CharField(max_length=300)
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=100)
    size_bytes = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    # Filterable in search: flat string keys with string, number or boolean values (bounded).
    metadata = models.JSONField(default=dict, blank=True)
    stage = models.CharField(max_length=10, choices=DocumentStage.choices, default=DocumentStage.UPLOADED)
    chunk_count = models.PositiveIntegerField(default=0)
    embedded_count = models.PositiveIntegerField(default=0)

    class Meta(WorkItem.Meta):
        ordering = ("-created_at",)
        constraints = [
            *work_item_constraints(),
            models.CheckConstraint(
                condition=models.Q(embedded_count__lte=models.F("chunk_count")),
                name="knowledge_document_embedded_at_most_chunks",
            ),
        ]
        indexes = [
            models.Index(fields=["knowledge_base", "-created_at", "-id"], name="knowledge_document_listed"),
        ]

    def __str__(self) -> str:
        return self.title


class DocumentUpload(models.Model):
    """The uploaded bytes, kept in the organization's schema until ingestion has chunked them."""

    document = models.OneToOneField(Document, on_delete=models.CASCADE, primary_key=True, related_name="upload")
    content = models.BinaryField()

    def __str__(self) -> str:
        return f"upload of {self.document_id}"


class Chunk(models.Model):
    # db_index=False: knowledge_chunk_ordinal_unique (document, ordinal) serves it.
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks", db_index=False)
    # The document's, repeated so that search filters without a join (indexed by knowledge_chunk_kb).
    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="+", db_index=False)
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    # The headings the chunk sits under, outermost first ("Guide / Install / Linux").
    heading_path = models.CharField(max_length=1000, blank=True, default="")
    token_estimate = models.PositiveIntegerField()
    # Full-text search over the heading path and the text (filled when the chunk is written).
    search_vector = SearchVectorField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["document", "ordinal"], name="knowledge_chunk_ordinal_unique"),
        ]
        indexes = [
            models.Index(fields=["knowledge_base"], name="knowledge_chunk_kb"),
            GinIndex(fields=["search_vector"], name="knowledge_chunk_fts"),
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.ordinal}"


def _hnsw_index(dimensions: int) -> HnswIndex:
    return HnswIndex(
        OpClass(Cast("embedding", VectorField(dimensions=dimensions)), name="vector_cosine_ops"),
        name=f"knowledge_vector_hnsw_{dimensions}",
        condition=models.Q(dimensions=dimensions),
        m=HNSW_M,
        ef_construction=HNSW_EF_CONSTRUCTION,
    )


class ChunkEmbedding(models.Model):
    """One chunk's vector in one embedding set."""

    # db_index=False: knowledge_vector_once_per_set (embedding_set, chunk) and knowledge_vector_chunk serve them.
    embedding_set = models.ForeignKey(EmbeddingSet, on_delete=models.CASCADE, related_name="vectors", db_index=False)
    chunk = models.ForeignKey(Chunk, on_delete=models.CASCADE, related_name="embeddings", db_index=False)
    dimensions = models.PositiveSmallIntegerField()
    embedding = VectorField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["embedding_set", "chunk"], name="knowledge_vector_once_per_set"),
            models.CheckConstraint(
                condition=models.Q(dimensions__in=SUPPORTED_DIMENSIONS), name="knowledge_vector_dimensions_supported"
            ),
            models.CheckConstraint(
                condition=models.Q(
                    dimensions=models.Func(
                        models.F("embedding"), function="vector_dims", output_field=models.IntegerField()
                    )
                ),
                name="knowledge_vector_dimensions_match",
            ),
        ]
        indexes = [
            models.Index(fields=["chunk"], name="knowledge_vector_chunk"),
            *(_hnsw_index(dimensions) for dimensions in SUPPORTED_DIMENSIONS),
        ]

    def __str__(self) -> str:
        return f"{self.chunk_id} in set {self.embedding_set_id}"
