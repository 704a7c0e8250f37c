"""Ingestion on real Celery worker processes, embedding through the fake provider over HTTP: a
document ingested end to end, and a worker SIGKILLed mid-ingestion whose document another worker
finishes, every chunk embedded once and billed once."""

from __future__ import annotations

import math
import signal
import time
from collections import Counter
from typing import Any

import pytest
from django_tenants.utils import schema_context

from apps.accounts.principals import Principal
from apps.knowledge.ingestion import DOCUMENT
from apps.knowledge.models import Chunk, ChunkEmbedding, Document, KnowledgeBase
from apps.knowledge.services import document_upload, knowledge_base_create
from apps.llm.models import UsageAttempt
from apps.tenants.models import Organization
from apps.work.services import work_reap
from tests.conftest import LiveDb
from tests.support.fake_provider import FakeProvider
from tests.support.worker import celery_worker, worker_start, worker_stop

pytestmark = pytest.mark.integration

ACTOR = Principal(kind="user", id="7", label="ada@example.com")


def _worker_env(provider: FakeProvider) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": "sk-test-platform",
        "OPENAI_BASE_URL": provider.openai_base_url,
        "JOB_HEARTBEAT_SECONDS": "1",
        "JOB_HEARTBEAT_TIMEOUT_SECONDS": "4",
        "LLM_HOLD_SECONDS": "600",
    }


def _document(organization: Organization, paragraphs: int) -> tuple[KnowledgeBase, Document]:
    with schema_context(organization.schema_name):
        base = knowledge_base_create(
            organization=organization,
            principal=ACTOR,
            name="Manual",
            embedding_model="text-embedding-3-small",
            dimensions=256,
            chunk_tokens=64,
            chunk_overlap_tokens=0,
        )
        # One paragraph a chunk (each about 50 estimated tokens), under a few headings.
        text = "\n\n".join(
            (f"## Section {n // 50}\n\n" if n % 50 == 0 else "") + " ".join(f"p{n}w{w}" for w in range(20))
            for n in range(paragraphs)
        )
        document = document_upload(
            organization=organization,
            principal=ACTOR,
            knowledge_base=base,
            filename="manual.md",
            content_type="text/markdown",
            content=f"# Manual\n\n{text}".encode(),
        )
    return base, document


def _state(organization: Organization, document: Document) -> Document:
    with schema_context(organization.schema_name):
        return Document.objects.get(pk=document.pk)


def _wait(
    organization: Organization, document: Document, until: Any, *, timeout_s: float, tick: Any = None
) -> Document:
    deadline = time.monotonic() + timeout_s
    while not until(state := _state(organization, document)):
        assert time.monotonic() < deadline, (state.status, state.stage, state.embedded_count, state.error_class)
        if tick is not None:
            tick()
        time.sleep(0.2)
    return state


def test_a_document_is_ingested_by_a_worker(live_db: LiveDb) -> None:
    organization = live_db.organization(slug="knowledge-worker")
    with FakeProvider() as provider, celery_worker(env=_worker_env(provider)):
        base, document = _document(organization, paragraphs=100)
        done = _wait(organization, document, lambda d: d.status not in ("queued", "running"), timeout_s=60)
    assert (done.status, done.stage) == ("succeeded", "indexed"), (done.error_class, done.error_message)
    assert done.chunk_count == done.embedded_count == 100  # one chunk per paragraph
    calls = [call for call in provider.calls if call.path.endswith("/embeddings")]
    assert len(calls) == math.ceil(100 / 64)
    assert all(call.body["dimensions"] == 256 and call.body["model"] == "text-embedding-3-small" for call in calls)
    with schema_context(organization.schema_name):
        assert ChunkEmbedding.objects.filter(embedding_set_id=base.active_set_id).count() == 100


def test_a_worker_killed_mid_ingestion_each_chunk_is_embedded_and_billed_once(live_db: LiveDb, settings: Any) -> None:
    """The worker is SIGKILLed while a batch is in flight at the provider; the reaper takes the
    document back and another worker finishes it. Every chunk ends with exactly one vector; every
    batch whose vectors committed was sent and billed once; the batch lost with the worker is the
    only one sent twice, its first ledger row settled from its reservation (swept)."""
    organization = live_db.organization(slug="knowledge-kill")
    settings.JOB_HEARTBEAT_TIMEOUT_SECONDS = 4
    settings.JOB_DISPATCH_RESEND_SECONDS = 6
    paragraphs = 64 * 12
    with FakeProvider(latency_s=0.6) as provider:
        env = _worker_env(provider)
        worker = worker_start(concurrency=4, env=env, name="k1")
        try:
            _base, document = _document(organization, paragraphs=paragraphs)
            # Killed once a few batches committed, while the next is in flight (the provider takes 0.6 s).
            _wait(organization, document, lambda d: d.embedded_count >= 64 * 3, timeout_s=60)
            time.sleep(0.3)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            killed_at = _state(organization, document)
            assert killed_at.status == "running" and killed_at.embedded_count < paragraphs
            worker = worker_start(concurrency=4, env=env, name="k2")

            def reap() -> None:
                with schema_context(organization.schema_name):
                    work_reap(organization=organization, kind=DOCUMENT)

            done = _wait(
                organization, document, lambda d: d.status not in ("queued", "running"), timeout_s=120, tick=reap
            )
        finally:
            worker_stop(worker)
    assert (done.status, done.stage) == ("succeeded", "indexed"), (done.error_class, done.error_message)
    assert done.attempts == 2 and done.chunk_count == done.embedded_count == paragraphs

    with schema_context(organization.schema_name):
        per_chunk = Counter(ChunkEmbedding.objects.values_list("chunk_id", flat=True))
        chunk_inputs = {
            f"{path}\n\n{text}"
            for path, text in Chunk.objects.filter(document=done).values_list("heading_path", "text")
        }
        rows = list(
            UsageAttempt.objects.filter(request_id__startswith=f"kd{done.pk.hex}-").values_list(
                "request_id", "status", "input_tokens", "cost_usd", "reserved_usd"
            )
        )
    assert len(per_chunk) == paragraphs and set(per_chunk.values()) == {1}, "a chunk has no vector, or two"

    calls = [call for call in provider.calls if call.path.endswith("/embeddings")]
    sent = Counter(text for call in calls for text in call.body["input"])
    assert set(sent) == chunk_inputs
    twice = {text for text, count in sent.items() if count > 1}
    assert len(twice) <= 64 and max(sent.values()) <= 2, "more than the batch in flight was sent again"

    ledger = {request_id: (status, tokens) for request_id, status, tokens, _, _ in rows}
    assert len(ledger) == len(rows), "two ledger rows for one request"
    served = Counter(call.request_id for call in calls)
    assert set(served.values()) == {1}
    succeeded = {request_id for request_id, (status, _) in ledger.items() if status == "succeeded"}
    swept = {request_id for request_id, (status, _) in ledger.items() if status == "swept"}
    assert set(ledger) == succeeded | swept and len(swept) <= 1, ledger
    assert succeeded <= set(served), "a billed batch the provider never served"
    # Billed once: the succeeded rows' tokens are the provider's count of each chunk once.
    billed_tokens = sum(tokens for request_id, (status, tokens) in ledger.items() if status == "succeeded")
    assert billed_tokens == sum(math.ceil(len(text.encode()) / 4) for text in chunk_inputs)
    print(
        f"\nkilled at {killed_at.embedded_count}/{paragraphs} chunks embedded; {len(calls)} provider calls, "
        f"{len(twice)} chunks sent twice (the batch in flight), {len(swept)} swept ledger row"
    )
