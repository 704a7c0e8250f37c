"""Issue 9, item 7: the organization's content policy holds everywhere content is kept or sent.

In no-content mode no prompt and no answer is kept anywhere (cache layers, jobs, workflow runs and
steps, webhook deliveries and what they send, idempotency answers, the ledger); a shortened
retention stops every process serving older answers; retention sweeps reach suspended and
past-due organizations; and one organization's change leaves another's caches alone.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from apps.api import tasks as api_tasks
from apps.api.models import IdempotencyKey
from apps.jobs.models import Job
from apps.jobs.services import job_execute
from apps.llm import caching
from apps.llm import tasks as llm_tasks
from apps.llm.models import CachedResponse, CallContent, SemanticCacheEntry
from apps.llm.selectors import llm_settings_forget
from apps.llm.services import llm_settings_set
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from apps.webhooks.models import WebhookDelivery
from apps.webhooks.services import webhook_delivery_attempt, webhook_endpoint_create
from apps.work import tasks as work_tasks
from apps.workflows.models import StepRun, WorkflowRun
from cognitionos.redis import redis_client
from tests.conftest import ApiClientFor
from tests.factories import TEST_ACTOR
from tests.support.fake_provider import ANSWER_PREFIX, FakeProvider
from tests.webhooks.receiver import Receiver, http_receiver
from tests.workflows.factories import drive

DEFINITION = {
    "inputs": ["text"],
    "steps": [
        {"name": "summary", "type": "llm", "model": "gpt-4o-mini", "prompt": "Summarize: {{ input.text }}"},
        {"name": "french", "type": "llm", "model": "gpt-4o-mini", "prompt": "In French: {{ steps.summary.output }}"},
    ],
}


def _marker() -> str:
    return f"zqmarker{uuid.uuid4().hex}"


def _chat(client: APIClient, text: str, **fields: Any) -> dict[str, Any]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "temperature": 0, **fields}
    response = client.post("/v1/chat/completions", body, format="json")
    assert response.status_code == 200, response.content
    answer: dict[str, Any] = response.json()
    return answer


def _cache_layer(client: APIClient, text: str) -> str:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "temperature": 0}
    response = client.post("/v1/chat/completions", body, format="json")
    assert response.status_code == 200, response.content
    return str(response["x-cognitionos-cache"])


def _job(client: APIClient, organization: Organization, text: str) -> str:
    response = client.post(
        "/api/v1/jobs",
        {"prompt": text, "model": "gpt-4o-mini"},
        format="json",
        headers={"Idempotency-Key": f"job-{uuid.uuid4().hex}"},
    )
    assert response.status_code == 202, response.content
    job_id = str(response.json()["id"])
    with organization_schema(organization):
        job_execute(organization=organization, job_id=uuid.UUID(job_id))  # as a worker would
    return job_id


def _run(client: APIClient, organization: Organization, text: str) -> str:
    created = client.post(
        "/api/v1/workflows", {"name": f"w{uuid.uuid4().hex[:8]}", "definition": DEFINITION}, format="json"
    )
    assert created.status_code == 201, created.content
    started = client.post(
        f"/api/v1/workflows/{created.json()['id']}/runs",
        {"input": {"text": text}},
        format="json",
        headers={"Idempotency-Key": f"run-{uuid.uuid4().hex}"},
    )
    assert started.status_code == 202, started.content
    run_id = str(started.json()["id"])
    with organization_schema(organization):
        drive(organization, WorkflowRun.objects.get(pk=run_id))
    return run_id


def _deliver_all(organization: Organization) -> None:
    with organization_schema(organization):
        ids = list(WebhookDelivery.objects.values_list("pk", flat=True))
    for delivery_id in ids:
        assert webhook_delivery_attempt(organization=organization, delivery_id=delivery_id) == "succeeded"


def _database_text(schema: str) -> str:
    """Every row of every table of the schema, as JSON text."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'",
            [schema],
        )
        tables = [row[0] for row in cursor.fetchall()]
        texts: list[str] = []
        for table in tables:
            cursor.execute(f'SELECT row_to_json(t)::text FROM "{schema}"."{table}" t')
            texts.extend(row[0] for row in cursor.fetchall())
    return "\n".join(texts)


def _redis_text() -> str:
    """Every value in Redis (the L2 cache, rate limits, breakers, queues), as text."""
    client = redis_client()
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1)
        elif kind == "stream":
            value = client.xrange(key)
        else:
            value = None
        parts.append(f"{key!r} {value!r}")
    return "\n".join(parts)


def _l1_text() -> str:
    """This process's L1 cache, every organization's entries."""
    return json.dumps([[schema, key, entry[2:]] for (schema, key), entry in caching.l1._entries.items()], default=str)


def _everywhere(organization: Organization, receiver: Receiver) -> dict[str, str]:
    tenant_connection().set_schema_to_public()
    return {
        "database (organization's schema)": _database_text(organization.schema_name),
        "database (public schema)": _database_text("public"),
        "redis (L2 and everything else)": _redis_text(),
        "L1": _l1_text(),
        "webhooks sent": "\n".join(request.body.decode() for request in receiver.received),
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with http_receiver() as receiver:
        yield receiver


def test_no_content_mode_keeps_and_sends_no_prompt_and_no_answer_anywhere(
    two_tenants: tuple[Organization, Organization],
    api_client_for: ApiClientFor,
    fake_provider: FakeProvider,
    receiver: Receiver,
) -> None:
    quiet, keeping = two_tenants
    llm_settings_set(organization=quiet, actor=TEST_ACTOR, store_content=False, semantic_cache=True)
    llm_settings_set(organization=keeping, actor=TEST_ACTOR, semantic_cache=True)
    secret, kept = _marker(), _marker()
    for organization in two_tenants:
        webhook_endpoint_create(organization=organization, actor=TEST_ACTOR, url=receiver.url, events=["*"])
    client = api_client_for(quiet)
    # The gateway (twice: a second call would be a cache hit if anything were cached), a job and a
    # workflow run, each with an Idempotency-Key, and every webhook they caused, delivered.
    for _ in range(2):
        answer = _chat(client, f"Tell me about {secret}", cache={"semantic": True})
        assert secret in answer["choices"][0]["message"]["content"]  # the caller gets the answer
    job_id = _job(client, quiet, f"Explain {secret}")
    run_id = _run(client, quiet, f"The story of {secret}")
    _deliver_all(quiet)
    # The organization that keeps content, for comparison: the same search finds its content.
    other = api_client_for(keeping)
    _chat(other, f"Tell me about {kept}", cache={"semantic": True})
    _job(other, keeping, f"Explain {kept}")
    _deliver_all(keeping)

    assert len(receiver.received) == 3  # job.succeeded and run.succeeded, and the other organization's job
    found = _everywhere(quiet, receiver)
    for place, text in found.items():
        assert secret not in text, f"the prompt or answer is kept or sent: {place}"
    assert ANSWER_PREFIX not in found["database (organization's schema)"]
    sent = [json.loads(request.body) for request in receiver.received]
    quiet_events = {event["type"]: event["data"] for event in sent if event["organization"] == quiet.slug}
    assert quiet_events["run.succeeded"]["run"]["output"] is None
    assert quiet_events["run.succeeded"]["run"]["cost_usd"] != "0"  # ids, status and costs stay
    assert quiet_events["job.succeeded"]["job"]["result"]["text"] is None
    assert quiet_events["job.succeeded"]["job"]["result"]["usage"]["completion_tokens"] > 0
    assert client.get(f"/api/v1/jobs/{job_id}").json()["result"]["text"] is None
    assert client.get(f"/api/v1/runs/{run_id}").json()["output"] is None
    # The walk is not blind: the other organization's answer is in its cache layers, its job and
    # its webhook.
    theirs = _everywhere(keeping, receiver)
    for place in ("database (organization's schema)", "redis (L2 and everything else)", "L1", "webhooks sent"):
        assert kept in theirs[place], place


def _cached_everywhere(client: APIClient, text: str) -> None:
    """Ask once: the answer lands in L1, L2, L4 and L3, for up to 30 days."""
    response = client.post(
        "/v1/chat/completions",
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": text}],
            "temperature": 0,
            "cache": {"semantic": True, "ttl": 30 * 86400},
        },
        format="json",
    )
    assert response.status_code == 200 and response["x-cognitionos-cache"] == "miss", response.content


def _age(organization: Organization, days: int) -> None:
    with organization_schema(organization):
        for model in (CachedResponse, SemanticCacheEntry, CallContent):
            model.objects.update(created_at=timezone.now() - dt.timedelta(days=days))


@contextmanager
def _another_process(schema: str) -> Iterator[None]:
    """What another web process still holds when this one changes the settings: its L1 entries and
    the L2 entries it may write before it sees the change (its settings cache lives 5 s)."""
    held = {k: v for k, v in caching.l1._entries.items() if k[0] == schema}
    client = redis_client()
    written: dict[Any, Any] = {key: client.get(key) or b"" for key in client.scan_iter(f"llm:cache:{schema}:*")}
    yield
    for k, v in held.items():
        caching.l1._entries[k] = v
    for key, value in written.items():
        client.set(key, value, ex=3600)
    llm_settings_forget()  # its settings cache expires


def test_shortening_the_retention_stops_every_process_serving_older_answers(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor, fake_provider: FakeProvider
) -> None:
    organization = two_tenants[0]
    llm_settings_set(organization=organization, actor=TEST_ACTOR, semantic_cache=True)
    old, new = _marker(), _marker()
    client = api_client_for(organization)
    _cached_everywhere(client, f"old {old}")
    _age(organization, days=3)
    _cached_everywhere(client, f"new {new}")
    assert _cache_layer(client, f"old {old}") == "l1"
    with _another_process(organization.schema_name):
        call_command("llm", "settings", "--tenant", organization.slug, "--retention-days", "1")
    # Three days old: not served from any layer, in any process, and not kept.
    assert _cache_layer(client, f"old {old}") == "miss"
    # Younger than the new retention: still served, but no longer than the new retention.
    assert _cache_layer(client, f"new {new}") in ("l2", "l4")
    horizon = timezone.now() + dt.timedelta(days=1, seconds=5)
    with organization_schema(organization):
        assert all(row.expires_at <= horizon for row in CachedResponse.objects.all())
        assert all(row.expires_at <= horizon for row in SemanticCacheEntry.objects.all())
    for key in redis_client().scan_iter(f"llm:cache:{organization.schema_name}:*"):
        assert 0 < int(redis_client().ttl(key)) <= 86400


def test_turning_content_off_stops_every_process_serving_cached_answers(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor, fake_provider: FakeProvider
) -> None:
    organization = two_tenants[0]
    text = f"question {_marker()}"
    client = api_client_for(organization)
    _chat(client, text)
    with _another_process(organization.schema_name):
        llm_settings_set(organization=organization, actor=TEST_ACTOR, store_content=False)
    llm_settings_set(organization=organization, actor=TEST_ACTOR, store_content=True)  # and back on
    llm_settings_forget()
    # An answer stored before content went off is never served again, from any layer.
    assert _cache_layer(client, text) == "miss"


def test_changing_one_organizations_policy_leaves_the_others_cache_alone(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor, fake_provider: FakeProvider
) -> None:
    tenant_a, tenant_b = two_tenants
    text = f"shared question {_marker()}"
    client_a, client_b = api_client_for(tenant_a), api_client_for(tenant_b)
    _chat(client_a, text)
    _chat(client_b, text)
    _age(tenant_a, days=3)
    _age(tenant_b, days=3)
    llm_settings_set(organization=tenant_a, actor=TEST_ACTOR, retention_days=1)
    # A's answer, three days old, is gone from every layer...
    assert not list(redis_client().scan_iter(f"llm:cache:{tenant_a.schema_name}:*"))
    assert _cache_layer(client_a, text) == "miss"
    # ...and B's is still answered from this process's L1, and kept in L2 and L4.
    assert _cache_layer(client_b, text) == "l1"
    assert len(list(redis_client().scan_iter(f"llm:cache:{tenant_b.schema_name}:*"))) == 1
    with organization_schema(tenant_b):
        assert CachedResponse.objects.count() == 1
    llm_settings_set(organization=tenant_a, actor=TEST_ACTOR, store_content=False)
    llm_settings_forget()
    assert _cache_layer(client_b, text) == "l1"


def _eager(monkeypatch: pytest.MonkeyPatch, *tasks: Any) -> None:
    """Tenant tasks sent by the beat fan-outs run at once, through the tenant task base."""
    for task in tasks:
        monkeypatch.setattr(task, "delay", lambda task=task, **kwargs: task(**kwargs))


def test_retention_sweeps_reach_suspended_and_past_due_organizations(
    two_tenants: tuple[Organization, Organization],
    fake_provider: FakeProvider,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    api_client_for: ApiClientFor,
) -> None:
    _eager(
        monkeypatch,
        llm_tasks.llm_content_sweep_one,
        work_tasks.work_maintain,
        api_tasks.idempotency_keys_purge,
    )
    marker = _marker()
    for organization in two_tenants:
        webhook_endpoint_create(organization=organization, actor=TEST_ACTOR, url=receiver.url, events=["*"])
        client = api_client_for(organization)
        _job(client, organization, f"Explain {marker}")
        _run(client, organization, f"The story of {marker}")
        long_ago = timezone.now() - dt.timedelta(days=40)
        with organization_schema(organization):
            Job.objects.update(finished_at=long_ago)
            WorkflowRun.objects.update(finished_at=long_ago)
            WebhookDelivery.objects.update(created_at=long_ago)
            IdempotencyKey.objects.update(created_at=long_ago)
        _age(organization, days=40)
    suspended, past_due = two_tenants
    Organization.objects.filter(pk=suspended.pk).update(status=Organization.Status.SUSPENDED)
    Organization.objects.filter(pk=past_due.pk).update(status=Organization.Status.PAST_DUE)
    organization_cache_forget()

    llm_tasks.llm_content_sweep_all()
    work_tasks.work_maintain_all(duty="sweep")
    api_tasks.idempotency_keys_purge_all()

    for organization in two_tenants:
        tenant_connection().set_schema_to_public()
        assert marker not in _database_text(organization.schema_name), organization.status
        with organization_schema(organization):
            assert all(job.content_removed for job in Job.objects.all())
            assert all(run.content_deleted_at for run in WorkflowRun.objects.all())
            assert not StepRun.objects.exclude(output=None).exists()
            deliveries = list(WebhookDelivery.objects.all())
            assert len(deliveries) == 2 and all(
                d.content_deleted_at and d.payload["content_removed"] for d in deliveries
            )
            assert not CachedResponse.objects.exists()
            assert not IdempotencyKey.objects.exists()
