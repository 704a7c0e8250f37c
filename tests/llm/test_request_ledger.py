"""What the request log reads from the ledger: each call's source (the entry point it came through)
and the model it asked for beside the one that answered; its prompt and answer (CallContent) kept
only under the organization's content policy, written with the settlement, purged by retention."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.accounts.principals import Principal
from apps.apikeys.services import apikey_create
from apps.jobs.services import job_execute, job_submit
from apps.knowledge.search import knowledge_search
from apps.llm.calls import CallSource, ChatOutcome, chat_call_parse, chat_complete, chat_stream
from apps.llm.content import readable_json
from apps.llm.models import CALL_CONTENT_MAX_CHARS, AttemptStatus, CallContent, UsageAttempt
from apps.llm.semantic import embedding_model_name
from apps.llm.services import llm_content_sweep, llm_settings_set
from apps.tenants.models import Organization
from apps.workflows.runs import run_start
from tests.factories import TEST_ACTOR
from tests.knowledge.factories import knowledge_base_make
from tests.llm.conftest import gateway_client
from tests.workflows.factories import KEY, drive, workflow_make

PRINCIPAL = Principal(kind="api_key", id="1", label="tests")


def _ask(organization: Organization, text: str = "Hello there", **fields: Any) -> ChatOutcome:
    body = {"model": "simulated-mini", "messages": [{"role": "user", "content": text}], **fields}
    with schema_context(organization.schema_name):
        return chat_complete(
            organization=organization, principal=PRINCIPAL, call=chat_call_parse(body), source=CallSource.JOB
        )


def _rows(organization: Organization, **filters: Any) -> list[UsageAttempt]:
    with schema_context(organization.schema_name):
        return list(UsageAttempt.objects.filter(**filters).order_by("id"))


def _content(organization: Organization, request_id: str) -> CallContent | None:
    with schema_context(organization.schema_name):
        return CallContent.objects.filter(request_id=request_id).first()


def test_gateway_calls_record_their_source_and_the_model_asked(tenant: Organization) -> None:
    key = apikey_create(organization=tenant, name="log", actor=TEST_ACTOR).key
    client = gateway_client(key)
    messages: Any = [{"role": "user", "content": "Which model answers a policy?"}]
    asked = client.chat.completions.with_raw_response.create(model="simulated-mini", messages=messages)
    routed = client.chat.completions.with_raw_response.create(
        model="simulated-mini", messages=messages, extra_body={"policy": "cheapest", "cache": {"skip": True}}
    )
    streamed = client.chat.completions.with_raw_response.create(
        model="simulated-mini", messages=[{"role": "user", "content": "stream me"}], stream=True
    )
    for _ in streamed.parse():
        pass
    embedded = client.embeddings.with_raw_response.create(model=str(embedding_model_name()), input="embed me")
    by_request = {row.request_id: row for row in _rows(tenant)}
    first = by_request[asked.headers["x-cognitionos-request-id"]]
    assert (first.source, first.model_requested, first.model_name) == ("gateway", "simulated-mini", "simulated-mini")
    assert first.api_key_id is not None and first.status == AttemptStatus.SUCCEEDED
    second = by_request[routed.headers["x-cognitionos-request-id"]]
    assert second.source == "gateway" and second.model_requested in ("simulated-mini", "policy:cheapest")
    assert by_request[streamed.headers["x-cognitionos-request-id"]].source == "gateway"
    embedding = by_request[embedded.headers["x-cognitionos-request-id"]]
    assert (embedding.source, embedding.model_requested) == ("embeddings", embedding_model_name())


def test_a_policy_call_records_the_policy_asked_and_the_model_it_chose(tenant: Organization) -> None:
    body = {"policy": "cheapest", "messages": [{"role": "user", "content": "route me"}]}
    outcome = chat_complete(
        organization=tenant, principal=PRINCIPAL, call=chat_call_parse(body), source=CallSource.PLAYGROUND
    )
    (row,) = _rows(tenant, request_id=outcome.request_id)
    assert row.model_requested == "policy:cheapest"
    assert row.model_name == outcome.model and row.model_name != row.model_requested
    assert row.source == "playground"


def test_a_cache_hit_records_source_model_asked_and_layer(tenant: Organization) -> None:
    first, second = _ask(tenant, "same question"), _ask(tenant, "same question")
    assert second.cache in ("l1", "l2", "l4")
    (hit,) = _rows(tenant, request_id=second.request_id)
    assert (hit.status, hit.source, hit.model_requested, hit.cache_layer) == (
        AttemptStatus.CACHE_HIT,
        "job",
        "simulated-mini",
        second.cache,
    )
    assert _rows(tenant, request_id=first.request_id)[0].cache_layer == ""


def test_jobs_workflow_steps_and_retrieval_record_their_source(tenant: Organization) -> None:
    job = job_submit(
        organization=tenant,
        principal=KEY,
        request={"model": "simulated-mini", "messages": [{"role": "user", "content": "a job"}]},
    )
    job_execute(organization=tenant, job_id=job.pk)
    (job_row,) = _rows(tenant, request_id__startswith=f"job-{job.pk.hex}")
    assert (job_row.source, job_row.model_requested) == ("job", "simulated-mini")

    started = run_start(organization=tenant, principal=KEY, workflow=workflow_make(tenant), input={"text": "t"})
    run = drive(tenant, started)
    steps = _rows(tenant, request_id__startswith=f"wf-{run.pk.hex}-")
    assert len(steps) == 2 and {row.source for row in steps} == {"workflow_step"}

    knowledge_search(
        organization=tenant,
        principal=KEY,
        knowledge_base=knowledge_base_make(name="Handbook", dimensions=256),
        query="what is retrieved",
        request_id="rag-test-1",
    )
    (retrieval,) = _rows(tenant, request_id="rag-test-1")
    assert retrieval.source == "retrieval" and retrieval.model_requested == "simulated-embedding"


def test_content_is_stored_with_the_settlement_under_the_policy(tenant: Organization) -> None:
    outcome = _ask(tenant, "Remember <b>this</b> prompt")
    stored = _content(tenant, outcome.request_id)
    assert stored is not None
    assert "Remember <b>this</b> prompt" in stored.prompt
    assert stored.answer == outcome.body["choices"][0]["message"]["content"] and stored.answer
    # A cache hit's call has its own content row, written with its ledger row.
    hit = _ask(tenant, "Remember <b>this</b> prompt")
    assert hit.cache != "miss"
    hit_content = _content(tenant, hit.request_id)
    assert hit_content is not None and hit_content.answer == stored.answer


def test_a_streamed_answer_is_stored_from_its_transcript(tenant: Organization) -> None:
    body = {"model": "simulated-mini", "messages": [{"role": "user", "content": "stream it"}], "stream": True}
    stream = chat_stream(organization=tenant, principal=PRINCIPAL, call=chat_call_parse(body))
    text = "".join(
        choice["delta"].get("content") or "" for chunk in stream.chunks for choice in chunk.get("choices") or []
    )
    stored = _content(tenant, stream.request_id)
    assert stored is not None and stored.answer == text and "stream it" in stored.prompt


def test_the_miss_still_takes_two_statements_with_content_stored(tenant: Organization) -> None:
    _ask(tenant, "warm the settings and the catalog")
    body = {"model": "simulated-mini", "messages": [{"role": "user", "content": "count me"}]}
    call = chat_call_parse(body)
    with CaptureQueriesContext(connection) as captured:
        outcome = chat_complete(organization=tenant, principal=PRINCIPAL, call=call, source=CallSource.GATEWAY)
    assert outcome.cache == "miss" and _content(tenant, outcome.request_id) is not None
    writes = [q["sql"] for q in captured.captured_queries if "llm_usageattempt" in q["sql"]]
    assert len(writes) == 2  # the reservation and the settlement; the content rides in the second
    assert "llm_callcontent" in writes[1]


def test_no_content_is_stored_when_the_policy_keeps_none(two_tenants: tuple[Organization, Organization]) -> None:
    tenant_a, tenant_b = two_tenants
    llm_settings_set(organization=tenant_a, actor=TEST_ACTOR, store_content=False)
    outcome = _ask(tenant_a, "forget me")
    assert _content(tenant_a, outcome.request_id) is None
    assert _rows(tenant_a, request_id=outcome.request_id)[0].status == AttemptStatus.SUCCEEDED
    kept = _ask(tenant_b, "keep me")
    assert _content(tenant_b, kept.request_id) is not None


def test_turning_content_off_deletes_the_stored_calls(two_tenants: tuple[Organization, Organization]) -> None:
    tenant_a, tenant_b = two_tenants
    a, b = _ask(tenant_a, "a"), _ask(tenant_b, "b")
    llm_settings_set(organization=tenant_a, actor=TEST_ACTOR, store_content=False)
    assert _content(tenant_a, a.request_id) is None
    assert _content(tenant_b, b.request_id) is not None


def test_the_retention_sweep_deletes_calls_older_than_the_retention(tenant: Organization) -> None:
    old, new = _ask(tenant, "old call"), _ask(tenant, "new call")
    llm_settings_set(organization=tenant, actor=TEST_ACTOR, retention_days=7)
    with schema_context(tenant.schema_name):
        CallContent.objects.filter(request_id=old.request_id).update(created_at=timezone.now() - dt.timedelta(days=8))
    llm_content_sweep(organization=tenant)
    assert _content(tenant, old.request_id) is None
    assert _content(tenant, new.request_id) is not None


def test_stored_content_is_bounded(tenant: Organization) -> None:
    long_text = "x" * (CALL_CONTENT_MAX_CHARS + 500)
    outcome = _ask(tenant, long_text)
    stored = _content(tenant, outcome.request_id)
    assert stored is not None and stored.truncated
    assert len(stored.prompt) == CALL_CONTENT_MAX_CHARS and stored.prompt.endswith("…")


@pytest.mark.parametrize("source", [CallSource.GATEWAY, CallSource.PLAYGROUND])
def test_the_source_is_one_of_the_known_values(tenant: Organization, source: str) -> None:
    outcome = chat_complete(
        organization=tenant,
        principal=PRINCIPAL,
        call=chat_call_parse({"model": "simulated-mini", "messages": [{"role": "user", "content": source}]}),
        source=source,
    )
    (row,) = _rows(tenant, request_id=outcome.request_id)
    assert row.source == source and row.get_source_display() != source


def test_a_kept_prompt_is_shown_indented_and_one_cut_short_as_it_is() -> None:
    assert readable_json('{"messages": [{"role": "user", "content": "hé"}]}') == (
        '{\n "messages": [\n  {\n   "role": "user",\n   "content": "hé"\n  }\n ]\n}'
    )
    cut = '{"messages": [{"role": "user", "content": "cut…'
    assert readable_json(cut) == cut
    assert readable_json("[" * 100_000) == "[" * 100_000  # too deep for the parser: shown as kept
