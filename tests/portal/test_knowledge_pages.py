"""The portal's knowledge base pages: the list, create (validated at the field), settings (a model
or dimension change asks first, then re-embeds), delete; a knowledge base's documents (upload with
refusals named, live rows, a failed document's reason, cancel, resume, delete) and its search box
(scores, heading path, matches marked and escaped), per organization and per role."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.billing.selectors import entitlement_cache_forget
from apps.knowledge.models import Document, EmbeddingSet, KnowledgeBase
from apps.portal.knowledge_pages import highlighted
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from tests.factories import member_make, plan_make
from tests.knowledge.factories import chunk_make, document_make, knowledge_base_make, simulated_embedding
from tests.portal.conftest import ClientFor

ROLES_WHO_WRITE = ("owner", "admin", "developer")
ROLES_WHO_ONLY_READ = ("viewer", "billing")


def signed_in(client_for: ClientFor, organization: Organization, role: str) -> tuple[Client, User]:
    user = member_make(organization=organization, role=role)
    client = client_for(f"{organization.slug}.localhost")
    client.force_login(user)
    return client, user


def base_make(organization: Organization, name: str = "Handbook", **fields: Any) -> KnowledgeBase:
    with organization_schema(organization):
        return knowledge_base_make(name=name, **fields)


def doc_make(
    organization: Organization, knowledge_base: KnowledgeBase, title: str = "Policies", **fields: Any
) -> Document:
    """A document (indexed unless `status` says otherwise), with the fields given."""
    with organization_schema(organization):
        document = document_make(knowledge_base, title=title)
        if fields:
            status = fields.get("status")
            if status in ("queued", "running"):
                fields.setdefault("finished_at", None)
            if status == "running":
                now = timezone.now()
                fields.update(started_at=now, heartbeat_at=now, attempts=1)
            Document.objects.filter(pk=document.pk).update(**fields)
            document.refresh_from_db()
        return document


def row_ids(html: str) -> list[str]:
    return re.findall(r'<tr id="document-([0-9a-f-]{36})"', html)


def row_of(html: str, document: Document) -> str:
    return html.split(f'<tr id="document-{document.pk}"')[1].split("</tr>", maxsplit=1)[0]


# -- the list and navigation ---------------------------------------------------------------------


def test_the_list_shows_each_base_with_its_counts_model_and_status(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization, other = two_tenants
    handbook = base_make(organization, "Handbook")
    with organization_schema(organization):
        document = document_make(handbook, title="Refunds")
        chunk_make(document, ordinal=0, text="Refunds within 30 days.")
        chunk_make(document, ordinal=1, text="Store credit afterwards.")
    base_make(other, "Their secrets")
    client, _ = signed_in(client_for, organization, "viewer")
    html = client.get("/knowledge/").content.decode()
    assert '<a href="/knowledge/" aria-current="page">Knowledge</a>' in html  # Build → Knowledge, current
    row = html.split(f'<tr id="kb-{handbook.pk}"')[1].split("</tr>")[0]
    assert "Handbook" in row and "simulated-embedding" in row and "256 dimensions" in row
    assert re.search(r'data-label="Documents" class="num">1<', row) and re.search(
        r'data-label="Chunks" class="num">2<', row
    )
    assert "Ready" in row
    assert "Their secrets" not in html
    # A viewer reads: no create, settings or delete offered.
    assert "/knowledge/new/" not in html and "Delete" not in row


def test_a_page_inside_a_knowledge_base_marks_the_section(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    handbook = base_make(two_tenants[0])
    client, _ = signed_in(client_for, two_tenants[0], "developer")
    html = client.get(f"/knowledge/{handbook.pk}/").content.decode()
    assert '<a href="/knowledge/" aria-current="true">Knowledge</a>' in html


# -- create and settings ---------------------------------------------------------------------------


def test_create_says_what_is_wrong_at_the_field_then_creates(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    base_make(organization, "Handbook")
    client, _ = signed_in(client_for, organization, "developer")
    form = client.get("/knowledge/new/").content.decode()
    for label in ("Name", "Embedding model", "Dimensions", "Chunk size (tokens)", "Chunk overlap (tokens)"):
        assert re.search(rf'<label for="id_\w+">{re.escape(label)}</label>', form), label
    assert '<option value="simulated-embedding"' in form
    assert '<button type="submit" class="button button--primary">Create knowledge base</button>' in form

    def post(**changes: str) -> Any:
        body = {
            "name": "Support",
            "description": "",
            "embedding_model": "simulated-embedding",
            "dimensions": "256",
            "chunk_tokens": "400",
            "chunk_overlap_tokens": "50",
            **changes,
        }
        return client.post("/knowledge/new/", body)

    refused = post(name="", chunk_tokens="10", chunk_overlap_tokens="300")
    assert refused.status_code == 400
    html = refused.content.decode()
    assert re.search(r'id="id_name"[^>]*aria-invalid="true"', html)
    assert "Give the knowledge base a name." in html
    assert "From 64 to 2,000 tokens." in html
    taken = post(name="handbook")  # names are unique whatever their case: said at the name
    assert taken.status_code == 400
    assert re.search(r'<p class="field__error" id="id_name_error">[^<]*exists', taken.content.decode())
    made = post()
    assert made.status_code == 302
    with organization_schema(organization):
        support = KnowledgeBase.objects.get(name="Support")
        assert (support.dimensions, support.chunk_tokens, support.chunk_overlap_tokens) == (256, 400, 50)
        assert AuditEvent.objects.filter(action="knowledge_base.created").exists()
    assert made["Location"] == f"/knowledge/{support.pk}/"


def test_changing_the_model_asks_first_then_reembeds_while_search_keeps_the_old_vectors(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    handbook = base_make(organization)
    with organization_schema(organization):
        document = document_make(handbook)
        for ordinal in range(4):
            chunk_make(document, ordinal=ordinal, text=f"part {ordinal}", vector=simulated_embedding(str(ordinal), 256))
    active = handbook.active_set_id
    client, _ = signed_in(client_for, organization, "developer")
    body = {
        "name": "Handbook",
        "description": "Staff rules",
        "embedding_model": "simulated-embedding",
        "dimensions": "384",
    }
    asked = client.post(f"/knowledge/{handbook.pk}/settings/", body)
    assert asked.status_code == 200
    html = asked.content.decode()
    assert "Re-embed knowledge base" in html and "4 chunks" in html and 'name="confirm" value="reembed"' in html
    with organization_schema(organization):
        assert KnowledgeBase.objects.get(pk=handbook.pk).dimensions == 256  # nothing changed yet
    done = client.post(f"/knowledge/{handbook.pk}/settings/", {**body, "confirm": "reembed"})
    assert done.status_code == 302
    with organization_schema(organization):
        changed = KnowledgeBase.objects.get(pk=handbook.pk)
        assert changed.dimensions == 384 and changed.description == "Staff rules"
        assert changed.active_set_id == active  # search answers from the old set until the new one is built
        building = EmbeddingSet.objects.get(knowledge_base=changed, dimensions=384)
        assert building.status in ("queued", "running")
    page = client.get(f"/knowledge/{handbook.pk}/").content.decode()
    assert "Re-embedding with" in page and "0 of 4 chunks" in page
    assert f"set={building.pk}" in page  # the live fragment follows it
    live = client.get(f"/knowledge/{handbook.pk}/live/?set={building.pk}").content.decode()
    assert 'id="reembedding" hx-swap-oob="true"' in live and "0 of 4 chunks" in live
    listed = client.get("/knowledge/").content.decode()
    assert "Re-embedding 0%" in listed


def test_a_rename_alone_saves_without_asking(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    handbook = base_make(organization)
    client, _ = signed_in(client_for, organization, "admin")
    body = {"name": "Staff handbook", "description": "", "embedding_model": "simulated-embedding", "dimensions": "256"}
    assert client.post(f"/knowledge/{handbook.pk}/settings/", body).status_code == 302
    with organization_schema(organization):
        assert KnowledgeBase.objects.get(pk=handbook.pk).name == "Staff handbook"
        assert not EmbeddingSet.objects.filter(knowledge_base_id=handbook.pk, status__in=("queued", "running")).exists()


def test_delete_removes_the_base_and_its_documents(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    handbook = base_make(organization)
    doc_make(organization, handbook)
    client, _ = signed_in(client_for, organization, "developer")
    settings_page = client.get(f"/knowledge/{handbook.pk}/settings/").content.decode()
    assert 'data-confirm="Delete the knowledge base “Handbook” with its 1 document?' in settings_page
    assert client.get(f"/knowledge/{handbook.pk}/delete/").status_code in (403, 405)  # never by a link
    answer = client.post(f"/knowledge/{handbook.pk}/delete/")
    assert answer.status_code == 302 and answer["Location"] == "/knowledge/"
    with organization_schema(organization):
        assert not KnowledgeBase.objects.filter(pk=handbook.pk).exists()
        assert not Document.objects.exists()


# -- roles and organizations -----------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES_WHO_ONLY_READ)
def test_a_member_without_knowledge_write_sees_documents_but_cannot_change_them(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, role: str
) -> None:
    organization = two_tenants[0]
    handbook = base_make(organization)
    failed = doc_make(
        organization, handbook, "Broken", status="failed", error_class="provider_error", error_message="x"
    )
    client, _ = signed_in(client_for, organization, role)
    page = client.get(f"/knowledge/{handbook.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert failed.title in html and 'id="kb-search"' in html  # reading and searching are for every reader
    assert 'type="file"' not in html and ">Delete<" not in html and ">Resume<" not in html and ">Cancel<" not in html
    assert "Edit settings" not in html
    settings_page = client.get(f"/knowledge/{handbook.pk}/settings/").content.decode()
    assert "<form" not in settings_page.split('id="kb-form-heading"')[1].split("</section>")[0]
    upload = SimpleUploadedFile("notes.md", b"# Notes\n\nHello", content_type="text/markdown")
    refused = [
        client.post(f"/knowledge/{handbook.pk}/upload/", {"files": upload}),
        client.post(f"/knowledge/{handbook.pk}/delete/"),
        client.post(f"/knowledge/{handbook.pk}/settings/", {"name": "Mine"}),
        client.post(f"/knowledge/{handbook.pk}/documents/{failed.pk}/resume/"),
        client.post(f"/knowledge/{handbook.pk}/documents/{failed.pk}/delete/"),
        client.get("/knowledge/new/"),
    ]
    assert [answer.status_code for answer in refused] == [403] * len(refused)
    with organization_schema(organization):
        assert Document.objects.count() == 1 and KnowledgeBase.objects.get().name == "Handbook"


def test_another_organizations_knowledge_base_and_documents_are_not_found(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization, other = two_tenants
    theirs = base_make(other, "Theirs")
    their_document = doc_make(other, theirs, "Their plan", status="failed", error_class="provider_error")
    mine = base_make(organization, "Mine")
    client, _ = signed_in(client_for, organization, "owner")
    base = f"/knowledge/{theirs.pk}/"
    answers = {
        "page": client.get(base),
        "live": client.get(f"{base}live/?id={their_document.pk}"),
        "settings": client.get(f"{base}settings/"),
        "settings post": client.post(f"{base}settings/", {"name": "Taken over"}),
        "delete": client.post(f"{base}delete/"),
        "upload": client.post(f"{base}upload/", {"files": SimpleUploadedFile("a.txt", b"hello")}),
        "search": client.post(f"{base}search/", {"query": "plan", "mode": "text", "top_k": "5"}),
        "resume": client.post(f"{base}documents/{their_document.pk}/resume/"),
        "delete document": client.post(f"{base}documents/{their_document.pk}/delete/"),
        # Their document's id under my own knowledge base: not mine either.
        "document under mine": client.post(f"/knowledge/{mine.pk}/documents/{their_document.pk}/cancel/"),
    }
    assert {name: answer.status_code for name, answer in answers.items()} == dict.fromkeys(answers, 404)
    assert "Theirs" not in client.get("/knowledge/").content.decode()
    # The live fragment under my base doesn't show their row either.
    live = client.get(f"/knowledge/{mine.pk}/live/?id={their_document.pk}").content.decode()
    assert str(their_document.pk) not in live.split('id="documents-live"')[1]
    with organization_schema(other):
        assert KnowledgeBase.objects.get(pk=theirs.pk).name == "Theirs"
        assert Document.objects.get(pk=their_document.pk).status == "failed"


# -- documents -------------------------------------------------------------------------------------


def test_upload_queues_each_file_and_names_a_refused_one_with_its_reason(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    handbook = base_make(organization)
    client, _ = signed_in(client_for, organization, "developer")
    page = client.get(f"/knowledge/{handbook.pk}/").content.decode()
    assert '<label for="id_files">Upload documents</label>' in page
    assert 'name="files" type="file" multiple' in page and "up to 20 files at once" in page
    assert re.search(r"up to [\d.]+ [KMG]B each", page)  # the plan's size limit, shown before uploading
    files = [
        SimpleUploadedFile("notes.md", b"# Notes\n\nRefunds take 30 days.", content_type="text/markdown"),
        SimpleUploadedFile("empty.txt", b"", content_type="text/plain"),
        SimpleUploadedFile("tool.exe", b"MZ\x90\x00\x03", content_type="application/octet-stream"),
    ]
    answer = client.post(f"/knowledge/{handbook.pk}/upload/", {"files": files})
    assert answer.status_code == 400
    html = answer.content.decode()
    field = html.split('<label for="id_files">')[1].split("</form>")[0]
    errors = re.findall(r'<p class="field__error wrap-anywhere">([^<]*)</p>', field)
    assert len(errors) == 2 and errors[0].startswith("empty.txt: ") and errors[1].startswith("tool.exe: ")
    assert "1 document queued (“notes.md”)" in html
    with organization_schema(organization):
        queued = Document.objects.get()
    assert queued.filename == "notes.md" and queued.status == "queued"
    assert row_ids(html) == [str(queued.pk)]
    assert "Queued" in row_of(html, queued) and f"id={queued.pk}" in html  # and the live fragment follows it
    nothing = client.post(f"/knowledge/{handbook.pk}/upload/", {})
    assert nothing.status_code == 400 and "Choose one or more files to upload." in nothing.content.decode()


def _field_errors(answer: Any) -> list[str]:
    field = answer.content.decode().split('<label for="id_files">')[1].split("</form>")[0]
    return re.findall(r'<p class="field__error wrap-anywhere">(.*?)</p>', field)


def test_a_plan_refusal_at_upload_links_to_the_plan_page_for_members_who_may_open_it(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization, other = two_tenants
    organization.plan = plan_make(code="tiny-knowledge", max_document_bytes=1000, max_knowledge_chunks=1)
    organization.save(update_fields=["plan"])
    organization_cache_forget()
    entitlement_cache_forget()
    try:
        handbook = base_make(organization)
        owner, _ = signed_in(client_for, organization, "owner")  # may open the plan page
        developer, _ = signed_in(client_for, organization, "developer")  # uploads, may not open it
        big = SimpleUploadedFile("big.txt", b"a" * 1001, content_type="text/plain")
        empty = SimpleUploadedFile("empty.txt", b"", content_type="text/plain")
        over_size = _field_errors(owner.post(f"/knowledge/{handbook.pk}/upload/", {"files": [big, empty]}))
        assert over_size[0].startswith("big.txt: ") and "over your plan&#x27;s limit" in over_size[0]
        assert over_size[0].endswith(' <a href="/billing/">See plans</a>')
        assert over_size[1].startswith("empty.txt: ") and "See plans" not in over_size[1]  # not the plan's doing
        big.seek(0)
        assert "See plans" not in _field_errors(developer.post(f"/knowledge/{handbook.pk}/upload/", {"files": big}))[0]
        with organization_schema(organization):  # the plan's one chunk is stored
            chunk_make(document_make(handbook, title="Full"), ordinal=0, text="x")
        small = SimpleUploadedFile("small.txt", b"hello", content_type="text/plain")
        answer = owner.post(f"/knowledge/{handbook.pk}/upload/", {"files": small})
        assert answer.status_code == 400
        [at_limit] = _field_errors(answer)
        assert at_limit.startswith("small.txt: ") and at_limit.endswith(' <a href="/billing/">See plans</a>')
        small.seek(0)
        [for_developer] = _field_errors(developer.post(f"/knowledge/{handbook.pk}/upload/", {"files": small}))
        assert for_developer.startswith("small.txt: ") and "See plans" not in for_developer
        # The other organization's plan is its own: the same file is queued there.
        theirs = base_make(other)
        their_owner, _ = signed_in(client_for, other, "owner")
        big.seek(0)
        queued = their_owner.post(f"/knowledge/{theirs.pk}/upload/", {"files": big})
        assert queued.status_code == 302
        with organization_schema(other):
            assert Document.objects.filter(knowledge_base=theirs, filename="big.txt").exists()
    finally:
        entitlement_cache_forget()
        organization_cache_forget()


def test_a_failed_document_shows_its_reason_and_only_a_resumable_one_offers_resume(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    handbook = base_make(organization)
    now = timezone.now()
    budget = doc_make(
        organization,
        handbook,
        "Manual",
        status="failed",
        stage="chunked",
        chunk_count=10,
        embedded_count=4,
        error_class="budget_exceeded",
        error_message="the day's budget of $1.00 is <reached>",
        finished_at=now,
    )
    broken = doc_make(
        organization,
        handbook,
        "Scan",
        status="failed",
        error_class="encrypted_pdf",
        error_message="the PDF is encrypted",
    )
    client, _ = signed_in(client_for, organization, "developer")
    html = client.get(f"/knowledge/{handbook.pk}/").content.decode()
    row = row_of(html, budget)
    assert "Failed" in row and "the day&#x27;s budget of $1.00 is &lt;reached&gt;" in row and "4 / 10 embedded" in row
    assert 'aria-label="Resume Manual">Resume</button>' in row
    assert "the PDF is encrypted" in row_of(html, broken) and ">Resume<" not in row_of(html, broken)
    assert client.post(f"/knowledge/{handbook.pk}/documents/{budget.pk}/resume/").status_code == 302
    with organization_schema(organization):
        budget.refresh_from_db()
    assert budget.status == "queued" and budget.embedded_count == 4  # continues where it stopped
    # Resuming it again: refused, said, nothing done.
    again = client.post(f"/knowledge/{handbook.pk}/documents/{budget.pk}/resume/", follow=True)
    assert "only a failed or cancelled document can be resumed" in again.content.decode()


def test_cancel_and_delete_a_document(two_tenants: tuple[Organization, Organization], client_for: ClientFor) -> None:
    organization = two_tenants[0]
    handbook = base_make(organization)
    running = doc_make(
        organization, handbook, "Long report", status="running", stage="chunked", chunk_count=40, embedded_count=12
    )
    client, _ = signed_in(client_for, organization, "developer")
    html = client.get(f"/knowledge/{handbook.pk}/").content.decode()
    row = row_of(html, running)
    assert "Embedding" in row and "12 / 40 embedded" in row and '<progress max="40" value="12"' in row
    assert 'aria-label="Cancel Long report">Cancel</button>' in row
    assert 'data-confirm="Delete “Long report” with its chunks and vectors?' in row
    assert client.post(f"/knowledge/{handbook.pk}/documents/{running.pk}/cancel/").status_code == 302
    with organization_schema(organization):
        running.refresh_from_db()
    assert running.status == "cancelled"
    html = client.get(f"/knowledge/{handbook.pk}/").content.decode()
    assert "Cancelled" in row_of(html, running) and ">Resume<" in row_of(html, running)
    assert client.post(f"/knowledge/{handbook.pk}/documents/{running.pk}/delete/").status_code == 302
    with organization_schema(organization):
        assert not Document.objects.filter(pk=running.pk).exists()
        assert AuditEvent.objects.filter(action="knowledge_document.deleted").exists()


def test_the_live_fragment_swaps_unfinished_rows_and_stops_polling_when_they_end(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    handbook = base_make(organization)
    queued = doc_make(organization, handbook, "Queued one", status="queued", stage="uploaded")
    done = doc_make(organization, handbook, "Done one")
    client, _ = signed_in(client_for, organization, "viewer")
    page = client.get(f"/knowledge/{handbook.pk}/").content.decode()
    poller = page.split('id="documents-live"')[1].split(">")[0]
    assert f"id={queued.pk}" in poller and str(done.pk) not in poller and 'hx-trigger="every 2s"' in poller
    live = client.get(f"/knowledge/{handbook.pk}/live/?id={queued.pk}&id=not-a-uuid").content.decode()
    assert f'<tr id="document-{queued.pk}" hx-swap-oob="true"' in live and "Waiting for a worker" in live
    with organization_schema(organization):
        Document.objects.filter(pk=queued.pk).update(
            status="succeeded", stage="indexed", chunk_count=3, embedded_count=3, finished_at=timezone.now()
        )
    ended = client.get(f"/knowledge/{handbook.pk}/live/?id={queued.pk}").content.decode()
    assert "Indexed" in ended and "3 / 3 embedded" in ended
    assert '<dl id="kb-stats" class="usage-stats kb-stats" hx-swap-oob="true">' in ended  # the figures too
    assert "<dt>Documents</dt><dd>2</dd>" in ended
    assert "hx-trigger" not in ended.split('id="documents-live"')[1].split(">")[0]  # nothing left to follow


def test_a_fragment_polled_after_sign_out_sends_the_page_to_sign_in(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    handbook = base_make(two_tenants[0])
    signed_out = client_for(f"{two_tenants[0].slug}.localhost")
    page = f"http://{two_tenants[0].slug}.localhost/knowledge/{handbook.pk}/"
    polled = signed_out.get(
        f"/knowledge/{handbook.pk}/live/?id={uuid.uuid4()}", headers={"HX-Request": "true", "HX-Current-URL": page}
    )
    assert polled.status_code == 401
    assert polled["HX-Redirect"] == f"/accounts/login/?next=/knowledge/{handbook.pk}/"


# -- search ----------------------------------------------------------------------------------------


def test_search_shows_scores_positions_heading_paths_and_marks_matches_escaped(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    handbook = base_make(organization)
    with organization_schema(organization):
        document = document_make(handbook, title="Refund <policy>")
        text = "Refunds are paid within 30 days. <script>alert(1)</script> Ask support."
        chunk_make(document, ordinal=0, text="Opening hours are nine to five.", vector=simulated_embedding("a", 256))
        chunk_make(
            document,
            ordinal=1,
            text=text,
            heading_path="Guide / Money / Refunds",
            vector=simulated_embedding("b", 256),
        )
    client, _ = signed_in(client_for, organization, "viewer")
    answer = client.post(f"/knowledge/{handbook.pk}/search/", {"query": "refund", "mode": "text", "top_k": "5"})
    assert answer.status_code == 200
    html = answer.content.decode()
    results = html.split('class="kb-results"')[1]
    assert "1 result · text" in results
    assert "Refund &lt;policy&gt;" in results and "chunk 2" in results and "score " in results
    assert "Guide \u203a Money \u203a Refunds" in results
    assert "<mark>Refunds</mark> are paid within 30 days. &lt;script&gt;alert(1)&lt;/script&gt; Ask support." in results
    assert "<script>alert(1)" not in html
    # From HTMX: only the search section, 200 even when refused, the error at its field.
    fragment = client.post(
        f"/knowledge/{handbook.pk}/search/",
        {"query": "refund", "mode": "hybrid", "top_k": "3"},
        headers={"HX-Request": "true"},
    )
    assert fragment.status_code == 200
    body = fragment.content.decode()
    assert body.lstrip().startswith('<section id="kb-search"') and "<mark>Refunds</mark>" in body
    assert "simulated-embedding" in body  # hybrid embedded the query
    refused = client.post(
        f"/knowledge/{handbook.pk}/search/",
        {"query": " ", "mode": "fuzzy", "top_k": "99"},
        headers={"HX-Request": "true"},
    )
    assert refused.status_code == 200
    errors = refused.content.decode()
    assert (
        "Write what to search for." in errors
        and "Choose hybrid, vector or text." in errors
        and "From 1 to 50." in errors
    )
    assert 'id="id_query"' in errors and 'aria-invalid="true"' in errors
    # Without HTMX a refused search is the whole page, 400.
    page = client.post(f"/knowledge/{handbook.pk}/search/", {"query": "", "mode": "text", "top_k": "5"})
    assert page.status_code == 400 and '<h2 id="documents-heading">Documents</h2>' in page.content.decode()
    assert client.get(f"/knowledge/{handbook.pk}/search/").status_code == 302  # a link never searches (nor spends)


def test_highlighted_cuts_text_into_marked_pieces_merging_overlaps_and_clipping() -> None:
    assert highlighted("refund policy", [(0, 6)]) == [("refund", True), (" policy", False)]
    assert highlighted("abcdef", [(4, 9), (1, 3), (2, 4)]) == [("a", False), ("bcdef", True)]
    assert highlighted("abc", [(-2, 1), (5, 7)]) == [("a", True), ("bc", False)]
    assert highlighted("", [(0, 3)]) == []
    assert highlighted("plain", []) == [("plain", False)]
