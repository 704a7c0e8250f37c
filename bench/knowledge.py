"""Knowledge search figures: vector latency and recall@10 against exact search, the filtered case,
hybrid search, ingestion throughput and HNSW build time.

    .venv/bin/python bench/knowledge.py [--quick] [--m 16] [--ef-construction 64] [--ef-search 40,100,200]

Vectors are SYNTHETIC (no embedding model runs here) but clustered, as embeddings are: a few hundred
gaussian cluster centres on the unit sphere, each chunk its centre plus isotropic gaussian noise
(`--noise`, the noise's norm relative to the centre's), and each query a fresh draw from the same
distribution (a new point near a random centre), not uniform noise, which is far easier. Chunk texts
are drawn from a vocabulary per cluster, so full text and vectors agree as they do on real text.

Rows go into the real tables (knowledge bases, embedding sets, documents, chunks, vectors) of a bench
organization's schema, loaded with COPY; the partial HNSW index `knowledge_vector_hnsw_N` is then
rebuilt with the parameters given (its build timed). Latency is measured at a fixed offered rate
(open loop: a query every `--interval-ms`, latency counted from its scheduled time), recall@10 against
the same query run as an exact search (no index scan: every row of the set compared). The generated
vectors and the exact answers are cached in .data/bench/knowledge-cache, so a rerun only loads,
builds and measures.

Runs on its own database in the bench servers (.data/bench). A benchmark, not a test: absolute
latencies depend on the machine (and its load); compare within one run.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import struct
import sys
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._setup import django_on_fresh_database  # noqa: E402 - after the path is set

CACHE = ROOT / ".data" / "bench" / "knowledge-cache"
TOP_K = 10
# As a server for vector search would be set up: the HNSW indexes (789 MB at 100,000 x 1,536) and
# the vectors they point at stay in shared buffers. pgserver's default (and make run's, 256 MB)
# holds neither: every query then copies most of the pages it visits from the OS cache (p95 about
# 2x). Applies when this run starts the bench PostgreSQL; the value in effect is printed.
POSTGRES_OPTIONS = {"shared_buffers": "3GB", "effective_cache_size": "8GB"}
# pgvector 0.6 builds HNSW in memory when the graph fits maintenance_work_mem (100,000 x 1,536 needs
# about 0.7 GB), otherwise far slower on disk; the build runs in parallel with this many workers
# besides the leader (2 cores here).
BUILD_MAINTENANCE_WORK_MEM = "2GB"
# Huge pages for those 3 GB of shared buffers (`--huge-pages`): an HNSW search reads a few thousand
# pages scattered over the index, and with 4 KB pages each costs a TLB miss; with 2 MB pages the
# same queries measured about 15 % faster here. PostgreSQL's default `huge_pages = try` uses them
# when the kernel has them reserved (vm.nr_hugepages) as the server starts.
HUGE_PAGES_FOR_SHARED_BUFFERS = 1750  # 2 MB pages: 3 GB of buffers and PostgreSQL's other shared memory
BUILD_PARALLEL_WORKERS = 1


@dataclass(frozen=True)
class Sizes:
    large: int  # chunks in the large knowledge base
    small: int  # chunks in the small one (the filtered case)
    clusters: int
    small_clusters: int
    queries: int  # distinct queries (each with its exact answer)
    scheduled: int  # queries sent per measured configuration (cycling through the distinct ones)
    chunks_per_document: int
    ingest_documents: int  # of about 100 chunks each


FULL = Sizes(
    large=100_000,
    small=1_000,
    clusters=300,
    small_clusters=20,
    queries=200,
    scheduled=600,
    chunks_per_document=100,
    ingest_documents=10,
)
QUICK = Sizes(
    large=5_000,
    small=500,
    clusters=30,
    small_clusters=5,
    queries=50,
    scheduled=150,
    chunks_per_document=50,
    ingest_documents=2,
)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# --- the synthetic data set -------------------------------------------------------------------------


class Clustered:
    """Points near `clusters` random unit centres: centre + noise, noise isotropic gaussian with an
    expected norm of `noise`. Drawn in pure Python (no numpy here): the noise of a point is the sum of
    two windows at random offsets of two pools of standard normals (two pools, so that no two points
    share their noise)."""

    POOL = 1 << 20

    def __init__(self, *, dimensions: int, clusters: int, noise: float, alpha: float, seed: int) -> None:
        self.dimensions = dimensions
        self.rng = random.Random(seed)
        gauss = self.rng.gauss
        self.centres = []
        for _ in range(clusters):
            centre = [gauss(0.0, 1.0) for _ in range(dimensions)]
            norm = math.sqrt(sum(x * x for x in centre))
            self.centres.append([x / norm for x in centre])
        self.pools = [array("d", (gauss(0.0, 1.0) for _ in range(self.POOL + dimensions))) for _ in range(2)]
        # Each coordinate of the sum of two windows has variance 2; coordinate j is weighted by
        # (j + 1) ** -alpha (normalized), so that the noise's norm is `noise` and most of it lies in
        # a few dozen directions, as the local variation of real embeddings does (alpha 0: isotropic,
        # where the 10 nearest points of a cluster are nearly as far as any other of it: no index finds them).
        weights = [(j + 1) ** -alpha for j in range(dimensions)]
        norm = math.sqrt(sum(w * w for w in weights))
        self.scales = [noise * w / norm / math.sqrt(2) for w in weights]

    def draw(self, count: int) -> Iterator[tuple[int, bytes]]:
        """(cluster, the vector as big-endian float4) for `count` points."""
        d, scales, rng = self.dimensions, self.scales, self.rng
        first, second = self.pools
        for _ in range(count):
            cluster = rng.randrange(len(self.centres))
            a, b = rng.randrange(self.POOL), rng.randrange(self.POOL)
            point = array(
                "f",
                [
                    c + s * (x + y)
                    for c, s, x, y in zip(
                        self.centres[cluster], scales, first[a : a + d], second[b : b + d], strict=True
                    )
                ],
            )
            if sys.byteorder == "little":
                point.byteswap()
            yield cluster, point.tobytes()


@dataclass
class Part:
    """Vectors (big-endian float4, back to back) and the cluster of each."""

    vectors: bytes
    clusters: list[int]
    dimensions: int

    def __len__(self) -> int:
        return len(self.clusters)

    def vector(self, index: int) -> bytes:
        size = 4 * self.dimensions
        return self.vectors[index * size : (index + 1) * size]

    def floats(self, index: int) -> list[float]:
        return list(struct.unpack(f">{self.dimensions}f", self.vector(index)))


def dataset_part(
    *, name: str, dimensions: int, clusters: int, count: int, noise: float, alpha: float, seed: int
) -> Part:
    """Generated once, then read from the cache."""
    key = f"{name}-{dimensions}d-{count}-k{clusters}-n{noise:g}a{alpha:g}-s{seed}"
    vectors_path, clusters_path = CACHE / f"{key}.f4be", CACHE / f"{key}.clusters.json"
    if vectors_path.exists() and clusters_path.exists():
        return Part(vectors_path.read_bytes(), json.loads(clusters_path.read_text()), dimensions)
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    generator = Clustered(dimensions=dimensions, clusters=clusters, noise=noise, alpha=alpha, seed=seed)
    drawn = list(generator.draw(count))
    part = Part(b"".join(vector for _, vector in drawn), [cluster for cluster, _ in drawn], dimensions)
    vectors_path.with_suffix(".tmp").write_bytes(part.vectors)
    vectors_path.with_suffix(".tmp").rename(vectors_path)
    clusters_path.write_text(json.dumps(part.clusters))
    print(f"  generated {key} in {time.perf_counter() - started:.0f} s (cached)", flush=True)
    return part


# Words: a vocabulary per cluster (what a topic talks about) and words every chunk uses.
def _word(rng: random.Random) -> str:
    return "".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4)))


class Texts:
    def __init__(self, *, clusters: int, seed: int) -> None:
        rng = random.Random(seed)
        self.common = [_word(rng) for _ in range(400)]
        self.topics = [[_word(rng) for _ in range(40)] for _ in range(clusters)]
        self.rng = rng

    def chunk(self, cluster: int) -> str:
        rng, topic = self.rng, self.topics[cluster]
        words = [rng.choice(topic) if rng.random() < 0.3 else rng.choice(self.common) for _ in range(80)]
        return " ".join(words)

    def query(self, cluster: int) -> str:
        return " ".join(self.rng.sample(self.topics[cluster], 2))


# --- loading the rows -------------------------------------------------------------------------------


@dataclass
class Base:
    name: str
    knowledge_base_id: str
    set_id: int
    dimensions: int
    first_chunk_id: int
    part: Part
    queries: Part
    query_texts: list[str]


LOADED = (384, 1536)  # every run loads both large bases (--dims picks what is measured)


def huge_pages_reserve() -> None:
    """vm.nr_hugepages raised to HUGE_PAGES_FOR_SHARED_BUFFERS (root only), before the bench server
    starts (a running one keeps the memory it has)."""
    path = Path("/proc/sys/vm/nr_hugepages")
    if int(path.read_text()) >= HUGE_PAGES_FOR_SHARED_BUFFERS:
        return
    try:
        path.write_text(str(HUGE_PAGES_FOR_SHARED_BUFFERS))
    except OSError as error:
        print(f"  huge pages not reserved ({error}); run as root, or set vm.nr_hugepages yourself")


def huge_pages_report() -> str:
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
    total, free, reserved = (int(meminfo.get(f"HugePages_{k}", "0").split()[0]) for k in ("Total", "Free", "Rsvd"))
    in_use = total - free + reserved
    return f"huge pages: {in_use:,} of {total:,} in use" if total else "huge pages: none reserved (4 KB pages)"


def database_attach(name: str) -> dict[str, Any] | None:
    """Attach to database `name` as a previous run left it: its manifest (what it loaded), or None."""
    import atexit
    import os

    import psycopg

    manifest = CACHE / f"{name}.json"
    if not manifest.exists():
        return None
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cognitionos.settings.development")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    from cognitionos.embedded import services_attach

    atexit.register(services_attach(data_dir=ROOT / ".data" / "bench", postgres_options=POSTGRES_OPTIONS).stop_owned)
    server = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    with psycopg.connect(server + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            del os.environ["DATABASE_URL"]
            return None
    os.environ["DATABASE_URL"] = f"{server}/{name}"
    import django

    django.setup()
    return dict(json.loads(manifest.read_text()))


def knowledge_reset() -> None:
    """Empty the bench organization's knowledge tables (another data set is loaded into them)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE knowledge_chunkembedding, knowledge_chunk, knowledge_documentupload, knowledge_document, "
            "knowledge_embeddingset, knowledge_knowledgebase CASCADE"
        )


def organization_make() -> Any:
    from apps.accounts.principals import Principal
    from apps.tenants.services import organization_create
    from bench._setup import unthrottled_plan

    unthrottled_plan("bench")
    return organization_create(
        plan_code="bench",
        slug="bench-knowledge",
        name="Bench knowledge",
        owner_email="owner@bench.example.com",
        actor=Principal.system("bench"),
    )


def _raw(cursor: Any) -> Any:
    return cursor.cursor  # Django's wrapper -> psycopg's cursor (COPY)


def base_load(
    *, name: str, dimensions: int, part: Part, queries: Part, texts: Texts, sizes: Sizes, first_chunk_id: int
) -> tuple[Base, float]:
    """A knowledge base with its active set, documents, chunks (COPY) and vectors (binary COPY);
    returns it and the seconds spent writing chunks and vectors."""
    import hashlib

    from django.db import connection
    from django.utils import timezone

    from apps.knowledge.models import Document, EmbeddingSet, KnowledgeBase

    now = timezone.now()
    done = {"status": "succeeded", "finished_at": now, "principal_kind": "system", "principal_label": "bench"}
    base = KnowledgeBase.objects.create(name=name, embedding_model="bench-synthetic", dimensions=dimensions)
    vectors = EmbeddingSet.objects.create(
        knowledge_base=base, embedding_model="bench-synthetic", dimensions=dimensions, activated_at=now, **done
    )
    base.active_set = vectors
    base.save(update_fields=["active_set"])
    per_document = sizes.chunks_per_document
    documents = Document.objects.bulk_create(
        Document(
            knowledge_base=base,
            title=f"{name} document {n}",
            filename=f"document-{n}.md",
            content_type="text/markdown",
            size_bytes=per_document * 500,
            sha256=hashlib.sha256(f"{name}{n}".encode()).hexdigest(),
            stage="indexed",
            chunk_count=per_document,
            embedded_count=per_document,
            **done,
        )
        for n in range(math.ceil(len(part) / per_document))
    )
    started = time.perf_counter()
    with connection.cursor() as cursor:
        raw = _raw(cursor)
        raw.execute("CREATE TEMP TABLE bench_chunk (id bigint, document_id uuid, ordinal int, text text, heading text)")
        with raw.copy("COPY bench_chunk FROM STDIN") as copy:
            for index, cluster in enumerate(part.clusters):
                document = documents[index // per_document]
                copy.write_row(
                    (
                        first_chunk_id + index,
                        document.id,
                        index % per_document,
                        texts.chunk(cluster),
                        f"{document.title} / Section {cluster}",
                    )
                )
        raw.execute(
            """
            INSERT INTO knowledge_chunk (id, document_id, knowledge_base_id, ordinal, text, heading_path,
                                         token_estimate, search_vector)
            SELECT id, document_id, %s, ordinal, text, heading, length(text) / 3 + 1,
                   setweight(to_tsvector('english', heading), 'A') || to_tsvector('english', text)
            FROM bench_chunk
            """,
            [base.id],
        )
        raw.execute("DROP TABLE bench_chunk")
        # Binary COPY of (embedding_set_id, chunk_id, dimensions, embedding): pgvector's binary form
        # is int16 dimensions, int16 unused, then big-endian float4s.
        row_head = struct.Struct(">hiqiqihi")
        vector_head = struct.pack(">HH", dimensions, 0)
        with raw.copy(
            "COPY knowledge_chunkembedding (embedding_set_id, chunk_id, dimensions, embedding) "
            "FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
            batch = bytearray()
            for index in range(len(part)):
                batch += row_head.pack(4, 8, vectors.id, 8, first_chunk_id + index, 2, dimensions, 4 + 4 * dimensions)
                batch += vector_head
                batch += part.vector(index)
                if len(batch) > 1 << 20:
                    copy.write(bytes(batch))
                    batch.clear()
            batch += struct.pack(">h", -1)
            copy.write(bytes(batch))
    written = time.perf_counter() - started
    return (
        Base(
            name=name,
            knowledge_base_id=str(base.id),
            set_id=vectors.id,
            dimensions=dimensions,
            first_chunk_id=first_chunk_id,
            part=part,
            queries=queries,
            query_texts=[texts.query(cluster) for cluster in queries.clusters],
        ),
        written,
    )


def index_rebuild(*, definitions: dict[str, str], dimensions: int, m: int, ef_construction: int) -> tuple[float, str]:
    """(Re)create `knowledge_vector_hnsw_N` as the migration defines it, with these parameters,
    building in memory and in parallel; returns the seconds it took and its size."""
    from django.db import connection

    name = f"knowledge_vector_hnsw_{dimensions}"
    definition = re.sub(r"WITH \([^)]*\)", f"WITH (m='{m}', ef_construction='{ef_construction}')", definitions[name])
    notices: list[str] = []

    def notice_keep(notice: Any) -> None:
        notices.append(notice.message_primary)

    with connection.cursor() as cursor:
        cursor.connection.add_notice_handler(notice_keep)
        cursor.execute(f"DROP INDEX IF EXISTS {name}")
        cursor.execute(f"SET maintenance_work_mem = '{BUILD_MAINTENANCE_WORK_MEM}'")
        cursor.execute(f"SET max_parallel_maintenance_workers = {BUILD_PARALLEL_WORKERS}")
        # The heap holds only TOAST pointers (the vectors are stored out of line), too small for
        # PostgreSQL to plan a parallel build on its own.
        cursor.execute("SET min_parallel_table_scan_size = 0")
        started = time.perf_counter()
        cursor.execute(definition)
        elapsed = time.perf_counter() - started
        cursor.execute(
            "RESET maintenance_work_mem; RESET max_parallel_maintenance_workers; RESET min_parallel_table_scan_size"
        )
        cursor.execute("ANALYZE knowledge_chunkembedding")
        cursor.execute("SELECT pg_size_pretty(pg_relation_size(%s))", [name])
        size = cursor.fetchone()[0]
        cursor.connection.remove_notice_handler(notice_keep)
    for notice in notices:
        print(f"    (server: {notice})")
    return elapsed, size


def index_describe(dimensions: int) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT array_to_string(c.reloptions, ', '), pg_size_pretty(pg_relation_size(c.oid)) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relname = %s",
            [f"knowledge_vector_hnsw_{dimensions}"],
        )
        row = cursor.fetchone()
    return f"{row[0]}, {row[1]}" if row else "none"


def indexes_drop() -> dict[str, str]:
    """The HNSW indexes and the full-text index, dropped before loading (rebuilt after): name -> definition."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND (indexname LIKE 'knowledge_vector_hnsw_%%' OR indexname = 'knowledge_chunk_fts')"
        )
        found = cursor.fetchall()
        for name, _ in found:
            cursor.execute(f"DROP INDEX {name}")
    return dict(found)


# --- measuring --------------------------------------------------------------------------------------


def nearest_statement(base: Base, vector: list[float]) -> tuple[str, dict[str, Any]]:
    """The vector path as knowledge search runs it (apps.knowledge.search.vector_candidates: the
    cast and the dimension filter match the partial index, the set filter keeps the knowledge
    base's own vectors), top 10."""
    from apps.knowledge.models import EmbeddingSet
    from apps.knowledge.search import vector_candidates

    vectors = EmbeddingSet(pk=base.set_id, dimensions=base.dimensions)
    return vector_candidates(embedding_set=vectors, vector=vector, filters={}, method="hnsw", limit=TOP_K)


def nearest_run(statement: tuple[str, dict[str, Any]]) -> list[int]:
    from apps.knowledge.search import vector_candidates_fetch

    return [chunk_id for chunk_id, _ in vector_candidates_fetch(*statement)]


def exact_answers(base: Base, cache_key: str) -> list[list[int]]:
    """Each query's true top 10 by exact search (knowledge search's exact statement: the distance
    over the uncast column, which no index serves), cached with the data set."""
    from apps.knowledge.models import EmbeddingSet
    from apps.knowledge.search import vector_candidates

    vectors = EmbeddingSet(pk=base.set_id, dimensions=base.dimensions)
    path = CACHE / f"{cache_key}-c{base.first_chunk_id}.exact.json"
    if path.exists():
        answers: list[list[int]] = json.loads(path.read_text())
        return answers
    started = time.perf_counter()
    answers = []
    for index in range(len(base.queries)):
        statement = vector_candidates(
            embedding_set=vectors, vector=base.queries.floats(index), filters={}, method="exact", limit=TOP_K
        )
        answers.append(nearest_run(statement))
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(answers))
    print(f"  exact answers for {base.name}: {time.perf_counter() - started:.0f} s (cached)", flush=True)
    return answers


def open_loop(
    run: Callable[[int], list[int]], *, distinct: int, scheduled: int, interval: float
) -> tuple[list[float], dict[int, list[int]]]:
    """Query `i % distinct` at start + i * interval (sleeping until then, never skipping); latency from
    the scheduled time, so a slow query delays and is charged to the ones queued behind it."""
    for index in range(min(distinct, 20)):  # warm the connection and the statement path
        run(index)
    latencies: list[float] = []
    answers: dict[int, list[int]] = {}
    start = time.perf_counter() + 0.05
    for i in range(scheduled):
        due = start + i * interval
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        answer = run(i % distinct)
        latencies.append(time.perf_counter() - due)
        answers.setdefault(i % distinct, answer)
    return latencies, answers


def recall(answers: dict[int, list[int]], truth: list[list[int]]) -> float:
    found = sum(len(set(answers[i]) & set(truth[i])) for i in answers)
    return found / sum(min(TOP_K, len(truth[i])) for i in answers)


def vector_runner(base: Base, ef_search: int) -> Callable[[int], list[int]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SET hnsw.ef_search = {ef_search}")
    statements = [nearest_statement(base, base.queries.floats(i)) for i in range(len(base.queries))]
    return lambda index: nearest_run(statements[index])


def uses_index(base: Base) -> str:

    from apps.knowledge.search import vector_candidates_explain

    plan = vector_candidates_explain(*nearest_statement(base, base.queries.floats(0)))
    found = re.search(r"Index Scan using (\S+)", plan)
    return found.group(1) if found else "no index (" + plan.split("(")[0].strip() + ")"


def report(label: str, latencies: list[float], value: float | None = None) -> str:
    line = f"p50 {percentile(latencies, 0.5) * 1000:6.2f} ms  p95 {percentile(latencies, 0.95) * 1000:6.2f} ms"
    if value is not None:
        line += f"  recall@10 {value:.3f}"
    return f"  {label:<34} {line}"


def measure_vector(base: Base, truth: list[list[int]], ef_searches: list[int], sizes: Sizes, interval: float) -> None:
    print(f"  plan: {uses_index(base)}")
    for ef_search in ef_searches:
        run = vector_runner(base, ef_search)
        latencies, answers = open_loop(run, distinct=len(base.queries), scheduled=sizes.scheduled, interval=interval)
        print(report(f"ef_search {ef_search}", latencies, recall(answers, truth)), flush=True)


def search_runner(base: Base, *, mode: str, top_k: int = TOP_K) -> Callable[[int], list[int]]:
    """knowledge_search as the API calls it, the query's embedding answered from the data set (the
    provider call is not what is measured here; the search's own queries, fusion and highlighting are)."""
    from decimal import Decimal

    from apps.accounts.principals import Principal
    from apps.knowledge import search
    from apps.knowledge.models import KnowledgeBase
    from apps.tenants.models import Organization

    vectors = [base.queries.floats(i) for i in range(len(base.queries))]
    current: dict[str, Any] = {}

    def embedded(**_: Any) -> tuple[list[float], Decimal, str]:
        return current["vector"], Decimal(0), "bench-synthetic"

    search._query_embed = embedded  # the bench's stand-in for the provider
    knowledge_base = KnowledgeBase.objects.select_related("active_set").get(pk=base.knowledge_base_id)
    organization = Organization.objects.get(slug="bench-knowledge")
    principal = Principal.system("bench")

    def run(index: int) -> list[int]:
        current["vector"] = vectors[index]
        results = search.knowledge_search(
            organization=organization,
            principal=principal,
            knowledge_base=knowledge_base,
            query=base.query_texts[index],
            top_k=top_k,
            mode=mode,  # type: ignore[arg-type]
            request_id=f"bench-{index}",
        )
        plans[results.plan or "none"] = plans.get(results.plan or "none", 0) + 1
        return [hit.chunk_id for hit in results.hits]

    plans: dict[str, int] = {}
    run.plans = plans  # type: ignore[attr-defined]
    return run


def measure_search(
    bases: dict[str, Base], truths: dict[str, list[list[int]]], *, ef_search: int, sizes: Sizes, interval: float
) -> None:
    """`truths` by the keys of `bases`."""
    """The filtered case and hybrid search through knowledge_search, beside the unfiltered one."""
    try:
        from apps.knowledge import search
    except ImportError:
        print("  knowledge_search: apps/knowledge/search.py is not there; not measured")
        return
    in_code = search.HNSW_EF_SEARCH
    search.HNSW_EF_SEARCH = ef_search
    large, small = bases["large-1536"], bases["small"]
    print(
        f"knowledge_search (vector path; apps.knowledge.search, HNSW_EF_SEARCH {ef_search}"
        + (f", {in_code} in the code" if in_code != ef_search else "")
        + f"), top_k {TOP_K}, one query every {interval * 1000:g} ms:"
    )
    figures = {}
    for label, key in (
        (f"large base ({len(large.part):,} x 1536)", "large-1536"),
        (f"small base ({len(small.part):,} x 1536) beside it", "small"),
    ):
        base = bases[key]
        run = search_runner(base, mode="vector")
        latencies, answers = open_loop(run, distinct=len(base.queries), scheduled=sizes.scheduled, interval=interval)
        figures[key] = percentile(latencies, 0.95)
        plans = ", ".join(f"{name} {count}" for name, count in run.plans.items())  # type: ignore[attr-defined]
        print(report(label, latencies, recall(answers, truths[key])) + f"  (plans: {plans})", flush=True)
    print(f"  filtered p95 / unfiltered p95: {figures['small'] / figures['large-1536']:.2f}")
    # The same filter in the plain query (no plan of search.py): through the HNSW index, pgvector 0.6.2
    # returns at most ef_search candidates before the filter (no iterative scans).
    run = vector_runner(small, ef_search)
    latencies, answers = open_loop(run, distinct=len(small.queries), scheduled=sizes.queries, interval=interval)
    returned = sum(len(answer) for answer in answers.values()) / len(answers)
    print(
        report("small base, the plain ORDER BY query", latencies, recall(answers, truths["small"]))
        + f"  ({returned:.1f} of {TOP_K} rows on average; PostgreSQL's plan: {uses_index(small)})"
    )
    run = search_runner(large, mode="hybrid")
    latencies, _ = open_loop(run, distinct=len(large.queries), scheduled=sizes.scheduled, interval=interval)
    print(
        report(f"hybrid, large base ({len(large.part):,})", latencies)
        + "  (full text + vector, reciprocal rank fusion)"
    )


def markdown_document(rng: random.Random, texts: Texts, number: int, chunks: int) -> bytes:
    """A Markdown document of about `chunks` chunks of 400 tokens, in sections under headings."""
    lines = [f"# Document {number}", ""]
    for section in range(chunks):
        cluster = rng.randrange(len(texts.topics))
        lines += [f"## Section {section}", ""]
        lines += [texts.chunk(cluster) + "." for _ in range(2)]  # 2 x 80 words: about one chunk
        lines.append("")
    return "\n".join(lines).encode()


def measure_ingestion(*, documents: int, chunks_per_document: int) -> None:
    """Documents through the real ingestion (upload, then the durable work run in this process):
    parse, chunk, write chunks, embed through the LLM engine (simulated model), write vectors into the
    indexed table. The provider's own time is measured around its call and subtracted."""
    from django.db import connection, transaction

    from apps.accounts.principals import Principal
    from apps.knowledge import ingestion, services
    from apps.llm import providers
    from apps.tenants.models import Organization
    from apps.work import services as work_services
    from apps.work.services import work_execute

    organization = Organization.objects.get(slug="bench-knowledge")
    principal = Principal.system("bench")
    with connection.cursor() as cursor:
        # The loaded chunks were given their ids in the COPY: new ones take theirs after them.
        cursor.execute("SELECT setval(pg_get_serial_sequence('knowledge_chunk', 'id'), max(id)) FROM knowledge_chunk")
    provider_seconds = [0.0]
    embed = providers.SimulatorProvider.embed

    def timed_embed(self: Any, payload: dict[str, Any], context: Any) -> Any:
        started = time.perf_counter()
        try:
            return embed(self, payload, context)
        finally:
            provider_seconds[0] += time.perf_counter() - started

    providers.SimulatorProvider.embed = timed_embed  # type: ignore[method-assign]
    work_services.work_send = lambda **_: None  # run here, not by a worker
    knowledge_base = services.knowledge_base_create(
        organization=organization,
        principal=principal,
        name=f"ingestion {time.strftime('%H:%M:%S')}",
        embedding_model="simulated-embedding",
        dimensions=1536,
    )
    rng = random.Random(7)
    texts = Texts(clusters=50, seed=7)
    contents = [markdown_document(rng, texts, n, chunks_per_document) for n in range(documents)]
    started = time.perf_counter()
    made = []
    for number, content in enumerate(contents):
        with transaction.atomic():
            document = services.document_upload(
                organization=organization,
                principal=principal,
                knowledge_base=knowledge_base,
                filename=f"document-{number}.md",
                content_type="text/markdown",
                content=content,
            )
        work_execute(organization=organization, kind=ingestion.DOCUMENT, item_id=document.pk)
        document.refresh_from_db()
        made.append(document)
    elapsed = time.perf_counter() - started
    providers.SimulatorProvider.embed = embed  # type: ignore[method-assign]
    chunks = sum(document.chunk_count for document in made)
    failed = [document for document in made if document.status != "succeeded"]
    if failed:
        print(
            f"  ingestion: {len(failed)} documents did not succeed: {failed[0].error_class} {failed[0].error_message}"
        )
    own = elapsed - provider_seconds[0]
    print(
        f"ingestion: {documents} Markdown documents, {chunks:,} chunks x 1536 into the indexed table: "
        f"{chunks / own:,.0f} chunks/s excluding provider time ({own:.1f} s; the simulated provider took "
        f"{provider_seconds[0]:.1f} s more: {chunks / elapsed:,.0f} chunks/s with it)",
        flush=True,
    )


def search_ef_search() -> int:
    from apps.knowledge.search import HNSW_EF_SEARCH

    return HNSW_EF_SEARCH


def main() -> None:  # noqa: PLR0912, PLR0915 - one straight script, section by section
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5,000 chunks instead of 100,000 (a smoke run)")
    parser.add_argument("--dims", default="384,1536", help="dimension counts to measure (comma-separated)")
    parser.add_argument(
        "--builds",
        default="16x64,32x256",
        help="HNSW builds to measure, m x ef_construction, comma-separated (pgvector's default, then the chosen one; "
        "the last is the one knowledge_search is measured with)",
    )
    parser.add_argument("--ef-search", default="100,150,200,300", help="hnsw.ef_search values to measure")
    parser.add_argument(
        "--chosen-ef-search",
        type=int,
        default=None,
        help="ef_search for knowledge_search's figures (default: apps.knowledge.search.HNSW_EF_SEARCH)",
    )
    parser.add_argument("--noise", type=float, default=1.0, help="noise norm relative to the unit centre")
    parser.add_argument(
        "--alpha",
        type=float,
        # 1.0: pgvector's default build gives about the recall the reference measured on
        # such data (0.878 here against 0.894 at ef_search 200); 0.5 is far harder (0.617).
        default=1.0,
        help="noise weight of coordinate j: (j + 1) ** -alpha (0: isotropic)",
    )
    parser.add_argument("--interval-ms", type=float, default=20.0, help="offered rate: one query per interval")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--keep-index",
        action="store_true",
        help="with --reuse: measure the HNSW indexes as the last run left them (no --builds)",
    )
    parser.add_argument(
        "--huge-pages",
        action="store_true",
        help="reserve huge pages for the bench server's shared buffers first (root; see HUGE_PAGES_FOR_SHARED_BUFFERS)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the database a previous run loaded (same sizes): only build and measure",
    )
    args = parser.parse_args()
    if args.huge_pages:
        huge_pages_reserve()
    sizes = QUICK if args.quick else FULL
    dims = [int(x) for x in args.dims.split(",")]
    builds = [(int(m), int(ef)) for m, ef in (build.split("x") for build in args.builds.split(","))]
    ef_searches = [int(x) for x in args.ef_search.split(",")]
    interval = args.interval_ms / 1000

    print(
        f"knowledge search, {sizes.large:,} chunks per large base, synthetic clustered vectors "
        f"(no embedding model runs here): {sizes.clusters} gaussian clusters on the unit sphere, noise {args.noise:g} "
        f"weighted (j + 1) ** -{args.alpha:g} over the coordinates, "
        f"queries drawn from the same distribution; open loop, one query every {args.interval_ms:g} ms",
        flush=True,
    )
    datasets = {}
    for n in LOADED:
        common = {"dimensions": n, "noise": args.noise, "alpha": args.alpha}
        datasets[n] = (
            dataset_part(name="large", clusters=sizes.clusters, count=sizes.large, seed=args.seed, **common),
            dataset_part(name="large-q", clusters=sizes.clusters, count=sizes.queries, seed=args.seed + 1, **common),
        )
    small = (
        dataset_part(
            name="small",
            dimensions=1536,
            clusters=sizes.small_clusters,
            count=sizes.small,
            noise=args.noise,
            alpha=args.alpha,
            seed=args.seed + 2,
        ),
        dataset_part(
            name="small-q",
            dimensions=1536,
            clusters=sizes.small_clusters,
            count=sizes.queries,
            noise=args.noise,
            alpha=args.alpha,
            seed=args.seed + 3,
        ),
    )

    database = "cognitionos_bench_knowledge" + ("_quick" if args.quick else "")
    manifest_key = f"{sizes}-{LOADED}-{args.noise:g}-{args.alpha:g}-{args.seed}"
    attached = database_attach(database) if args.reuse else None
    if attached is None:
        django_on_fresh_database(database, postgres_options=POSTGRES_OPTIONS)
    from django.db import connection
    from django_tenants.utils import schema_context

    from apps.tenants.models import Organization

    manifest = None
    if attached is None:
        organization = organization_make()
    else:
        organization = Organization.objects.get(slug="bench-knowledge")
        if attached["key"] == manifest_key:
            manifest = attached
            print("  reusing the loaded database (--reuse)")
        else:
            print("  reusing the database (--reuse), loading this data set into it")
    with connection.cursor() as cursor:
        cursor.execute("SHOW shared_buffers")
        print(
            f"  PostgreSQL shared_buffers {cursor.fetchone()[0]}, {huge_pages_report()}"
            " (a running bench server keeps its own)"
        )
    with schema_context(organization.schema_name):
        bases: dict[str, Base] = {}
        if manifest is None:
            if attached is not None:
                knowledge_reset()
            definitions = (attached or {}).get("definitions", {}) | indexes_drop()
            texts = Texts(clusters=sizes.clusters, seed=args.seed)
            next_id = 1
            for n in LOADED:
                part, queries = datasets[n]
                bases[f"large-{n}"], seconds = base_load(
                    name=f"large-{n}",
                    dimensions=n,
                    part=part,
                    queries=queries,
                    texts=texts,
                    sizes=sizes,
                    first_chunk_id=next_id,
                )
                next_id += len(part)
                print(f"  loaded {len(part):,} x {n} (chunks and vectors, COPY) in {seconds:.1f} s", flush=True)
            small_texts = Texts(clusters=sizes.small_clusters, seed=args.seed + 2)
            bases["small"], _ = base_load(
                name="small-1536",
                dimensions=1536,
                part=small[0],
                queries=small[1],
                texts=small_texts,
                sizes=sizes,
                first_chunk_id=next_id,
            )
            with connection.cursor() as cursor:
                cursor.execute(definitions["knowledge_chunk_fts"])
                cursor.execute("VACUUM ANALYZE knowledge_chunk")
                cursor.execute("VACUUM ANALYZE knowledge_chunkembedding")
            (CACHE / f"{database}.json").write_text(
                json.dumps(
                    {
                        "key": manifest_key,
                        "definitions": definitions,
                        "bases": {
                            name: {
                                "knowledge_base_id": b.knowledge_base_id,
                                "set_id": b.set_id,
                                "first_chunk_id": b.first_chunk_id,
                                "query_texts": b.query_texts,
                            }
                            for name, b in bases.items()
                        },
                    }
                )
            )
        else:
            definitions = manifest["definitions"]
            parts = {f"large-{n}": (n, *datasets[n]) for n in LOADED} | {"small": (1536, *small)}
            for name, (n, part, queries) in parts.items():
                stored = manifest["bases"][name]
                bases[name] = Base(name=name, dimensions=n, part=part, queries=queries, **stored)

        truths: dict[str, list[list[int]]] = {}
        for n in dims:
            base = bases[f"large-{n}"]
            key = f"large-{n}d-{sizes.large}-k{sizes.clusters}-n{args.noise:g}a{args.alpha:g}-s{args.seed}"
            truth = exact_answers(base, key)
            if args.keep_index:
                print(f"{sizes.large:,} x {n}: the HNSW index as the last run built it ({index_describe(n)})")
                measure_vector(base, truth, ef_searches, sizes, interval)
            for m, ef_construction in [] if args.keep_index else builds:
                seconds, size = index_rebuild(
                    definitions=definitions, dimensions=n, m=m, ef_construction=ef_construction
                )
                print(
                    f"{sizes.large:,} x {n}: HNSW m={m} ef_construction={ef_construction} built in {seconds:.1f} s "
                    f"({size}; maintenance_work_mem {BUILD_MAINTENANCE_WORK_MEM}, "
                    f"{BUILD_PARALLEL_WORKERS} parallel worker + leader)",
                    flush=True,
                )
                measure_vector(base, truth, ef_searches, sizes, interval)
            truths[f"large-{n}"] = truth
        if 1536 in dims:
            truths["small"] = exact_answers(
                bases["small"],
                f"small-1536d-{sizes.small}-k{sizes.small_clusters}-n{args.noise:g}a{args.alpha:g}-s{args.seed}",
            )
            measure_search(
                bases, truths, ef_search=args.chosen_ef_search or search_ef_search(), sizes=sizes, interval=interval
            )
            measure_ingestion(documents=sizes.ingest_documents, chunks_per_document=100)


if __name__ == "__main__":
    main()
