"""What `make run` starts with: the operator, the demo organization on Pro, and a knowledge base of
the project's guides queued for ingestion, created once."""

from __future__ import annotations

from django_tenants.utils import schema_context

from apps.knowledge.models import Document, KnowledgeBase
from apps.ops.services import DEMO_GUIDES, DEMO_SLUG, demo_ensure
from apps.work.models import WorkStatus


def test_the_demo_starts_with_a_knowledge_base_of_the_guides_once(db: None) -> None:
    first = demo_ensure()
    assert first.organization.slug == DEMO_SLUG and first.operator_password is not None
    with schema_context(first.organization.schema_name):
        base = KnowledgeBase.objects.get()
        documents = Document.objects.filter(knowledge_base=base)
        assert sorted(documents.values_list("filename", flat=True)) == sorted(DEMO_GUIDES)
        assert {(d.status, d.content_type) for d in documents} == {(WorkStatus.QUEUED, "text/markdown")}
        assert all(document.size_bytes > 1000 for document in documents)

    again = demo_ensure()
    assert again.organization.pk == first.organization.pk and again.operator_password is None
    with schema_context(first.organization.schema_name):
        assert KnowledgeBase.objects.count() == 1 and Document.objects.count() == len(DEMO_GUIDES)
