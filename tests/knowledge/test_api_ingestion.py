"""A document's progress through the REST API while a real Celery worker ingests it: uploaded as
multipart, followed by GET until it ends, then found by the API's search; a broken file fails
with its reason and can't be resumed; the knowledge base counts what was indexed. Embeddings come
from the simulator's embedding model (no provider over HTTP)."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from apps.apikeys.services import apikey_create
from tests.conftest import LiveDb
from tests.factories import TEST_ACTOR
from tests.knowledge.factories import SIMULATED_MODEL
from tests.support.worker import celery_worker

pytestmark = pytest.mark.integration

BASES = "/api/v1/knowledge-bases"
SECTIONS = "\n\n".join(
    f"## Section {n}\n\n" + " ".join(f"Parcel rule {n}.{m}: damaged parcels are refunded in full." for m in range(40))
    for n in range(8)
)
GUIDE = f"# Returns guide\n\n{SECTIONS}\n"


def _follow(client: APIClient, url: str, timeout_s: float = 120) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """GET the document until its ingestion ends; the distinct progress states seen on the way."""
    seen: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(url).json()
        state = (body["status"], body["stage"], body["chunk_count"], body["embedded_count"])
        if not seen or seen[-1] != state:
            seen.append(state)
        if body["status"] not in ("queued", "running"):
            return body, seen
        assert time.monotonic() < deadline, seen
        time.sleep(0.1)


def test_progress_fields_follow_ingestion_on_a_worker_and_search_finds_the_document(live_db: LiveDb) -> None:
    organization = live_db.organization(slug="knowledge-api")
    key = apikey_create(organization=organization, name="api", actor=TEST_ACTOR).key
    client = APIClient(HTTP_HOST="localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    created = client.post(
        BASES,
        {"name": "Guides", "embedding_model": SIMULATED_MODEL, "dimensions": 256, "chunk_tokens": 128},
        format="json",
    )
    assert created.status_code == 201, created.content
    base = created.json()["id"]
    with celery_worker(concurrency=2):
        uploaded = client.post(
            f"{BASES}/{base}/documents",
            {
                "file": SimpleUploadedFile("returns.md", GUIDE.encode(), content_type="text/markdown"),
                "title": "Returns",
            },
            format="multipart",
        )
        assert uploaded.status_code == 202, uploaded.content
        document, seen = _follow(client, uploaded["Location"])
        broken = client.post(
            f"{BASES}/{base}/documents",
            {"file": SimpleUploadedFile("scan.pdf", b"%PDF-1.7\n1 0 obj <<>> garbage", content_type="application/pdf")},
            format="multipart",
        )
        if broken.status_code == 202:  # accepted by its header, failed by ingestion with a reason
            failed, _ = _follow(client, broken["Location"])
            assert failed["status"] == "failed" and failed["error"]["class"] and failed["error"]["message"], failed
            refused = client.post(f"{broken['Location']}/resume")
            assert refused.status_code == 409, refused.content
        else:  # or refused at once, naming the field
            assert broken.status_code == 400 and broken.json()["error"]["param"] == "file", broken.content
        events = client.get(f"{uploaded['Location']}/events")
        stream = b"".join(events.streaming_content).decode()  # type: ignore[attr-defined]
        found = client.post(f"{BASES}/{base}/search", {"query": "damaged parcels refunded", "top_k": 3}, format="json")
    assert document["status"] == "succeeded", (document, seen)
    assert document["stage"] == "indexed" and document["error"] is None
    assert document["chunk_count"] > 1 and document["embedded_count"] == document["chunk_count"], document
    assert float(document["cost_usd"]) > 0 and document["runs"] == 1
    # What a client saw on the way: counts never went back, and embedding never ran ahead of chunking.
    assert seen[0][0] in ("queued", "running") and seen[-1][:2] == ("succeeded", "indexed")
    for (_, _, chunks, embedded), (_, _, later_chunks, later_embedded) in itertools.pairwise(seen):
        assert later_chunks >= chunks and later_embedded >= embedded
    assert all(embedded <= chunks for _, _, chunks, embedded in seen)
    detail = client.get(f"{BASES}/{base}").json()
    assert detail["chunk_count"] == document["chunk_count"] and detail["document_count"] in (1, 2)
    # Following the finished document: its state at once, then the stream ends.
    assert events["Content-Type"] == "text/event-stream"
    assert stream.startswith("event: progress\ndata: ") and '"stage": "indexed"' in stream, stream[:300]
    assert found.status_code == 200, found.content
    hits = found.json()["hits"]
    assert len(hits) == 3 and {hit["document_id"] for hit in hits} == {document["id"]}
    assert all(hit["heading_path"].startswith("Returns guide") and hit["matches"] for hit in hits), hits
