"""The organization's model settings in the engine: a model it doesn't allow is refused (403
model_not_allowed, OpenAI's error shape) before any work, a policy picks only among allowed models,
and a call naming no model (or "default") takes the organization's default policy — through /v1
with the openai SDK, streamed, and in jobs. The check costs no query: the settings are cached."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context

from apps.accounts.principals import Principal
from apps.jobs.models import JobStatus
from apps.jobs.services import job_execute, job_submit
from apps.llm import engine
from apps.llm.calls import chat_call_parse
from apps.llm.models import DEFAULT_POLICIES, LlmSettings, UsageAttempt
from apps.llm.router import POLICIES
from apps.llm.selectors import llm_settings_forget, llm_settings_get
from apps.llm.services import SettingsInvalid, llm_settings_set
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR
from tests.llm.conftest import gateway_client

HELLO: Any = [{"role": "user", "content": "Hello there"}]
KEY = Principal(kind="api_key", id="7", label="tests (cos_x)")


def _attempts(organization: Organization) -> list[UsageAttempt]:
    with schema_context(organization.schema_name):
        return list(UsageAttempt.objects.order_by("id"))


def _post(body: object, key: str) -> tuple[int, dict[str, Any]]:
    response = Client().post(
        "/v1/chat/completions",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_HOST="localhost",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    return response.status_code, response.json()


def _allow(organization: Organization, models: list[str], default_policy: str = "") -> None:
    llm_settings_set(organization=organization, actor=TEST_ACTOR, allowed_models=models, default_policy=default_policy)
    llm_settings_forget()


def test_the_default_policies_are_the_routers() -> None:
    assert DEFAULT_POLICIES == POLICIES


def test_a_model_the_organization_does_not_allow_is_refused_before_any_work(
    two_tenants: tuple[Organization, Organization], key_a: str, key_b: str
) -> None:
    tenant_a, tenant_b = two_tenants
    _allow(tenant_a, ["simulated-mini"])
    client = gateway_client(key_a)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="simulated-pro", messages=HELLO)
    assert refused.value.status_code == 403
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "model_not_allowed" and error["param"] == "model"
    assert "not allowed" in error["message"]
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="simulated-pro", messages=HELLO, stream=True)
    assert _attempts(tenant_a) == []

    allowed = client.chat.completions.create(model="simulated-mini", messages=HELLO)
    assert allowed.model == "simulated-mini"
    # Another organization's settings are its own.
    other = gateway_client(key_b).chat.completions.create(model="simulated-pro", messages=HELLO)
    assert other.model == "simulated-pro"
    assert [a.model_name for a in _attempts(tenant_b)] == ["simulated-pro"]


def test_a_policy_picks_only_among_the_allowed_models(
    two_tenants: tuple[Organization, Organization], key_a: str
) -> None:
    tenant_a, _ = two_tenants
    _allow(tenant_a, ["simulated-pro"])  # the dearer one: "cheapest" would otherwise pick mini
    answer = gateway_client(key_a).chat.completions.create(model="cheapest", messages=HELLO)
    assert answer.model == "simulated-pro"
    _allow(tenant_a, [])
    assert gateway_client(key_a).chat.completions.create(model="cheapest", messages=HELLO).model == "simulated-mini"


def test_a_call_without_a_model_takes_the_default_policy_or_is_refused_without_one(
    two_tenants: tuple[Organization, Organization], key_a: str
) -> None:
    tenant_a, _ = two_tenants
    status, body = _post({"messages": HELLO}, key_a)
    assert status == 400 and body["error"]["code"] == "model_required"
    assert "default policy" in body["error"]["message"]
    with pytest.raises(openai.BadRequestError):
        gateway_client(key_a).chat.completions.create(model="default", messages=HELLO)

    _allow(tenant_a, ["simulated-pro"], default_policy="cheapest")
    status, body = _post({"messages": HELLO}, key_a)
    assert status == 200 and body["model"] == "simulated-pro"
    streamed = gateway_client(key_a).chat.completions.create(model="default", messages=HELLO, stream=True)
    assert {chunk.model for chunk in streamed} == {"simulated-pro"}
    _allow(tenant_a, [], default_policy="cheapest")
    assert gateway_client(key_a).chat.completions.create(model="default", messages=HELLO).model == "simulated-mini"
    assert len(_attempts(tenant_a)) == 3


def test_jobs_follow_the_model_settings(tenant: Organization) -> None:
    _allow(tenant, ["simulated-mini"], default_policy="cheapest")
    refused = job_submit(organization=tenant, principal=KEY, request={"model": "simulated-pro", "messages": HELLO})
    job_execute(organization=tenant, job_id=refused.pk)
    refused.refresh_from_db()
    assert (refused.status, refused.error_class) == (JobStatus.FAILED, "model_not_allowed")
    defaulted = job_submit(organization=tenant, principal=KEY, request={"model": "default", "messages": HELLO})
    job_execute(organization=tenant, job_id=defaulted.pk)
    defaulted.refresh_from_db()
    assert defaulted.status == JobStatus.SUCCEEDED
    assert defaulted.result is not None and defaulted.result["model"] == "simulated-mini"


def test_the_settings_check_costs_no_query_once_the_settings_are_cached(tenant: Organization) -> None:
    _allow(tenant, ["simulated-mini"], default_policy="fastest")
    llm_settings_get(organization=tenant)  # what the call's caches read anyway
    call = chat_call_parse({"messages": HELLO})
    with CaptureQueriesContext(connection) as queries:
        resolved, allowed = engine._within_settings(tenant, call)
    assert len(queries) == 0
    assert resolved.policy == "fastest" and allowed == frozenset({"simulated-mini"})


def test_settings_are_bounded_in_the_service_and_the_database(tenant: Organization) -> None:
    with pytest.raises(SettingsInvalid) as unknown:
        llm_settings_set(organization=tenant, actor=TEST_ACTOR, allowed_models=["no-such-model"])
    assert unknown.value.param == "allowed_models"
    with pytest.raises(SettingsInvalid):
        llm_settings_set(organization=tenant, actor=TEST_ACTOR, default_policy="random")
    from django.db import IntegrityError, transaction

    with organization_schema(tenant), pytest.raises(IntegrityError), transaction.atomic():
        LlmSettings.objects.create(pk=1, default_policy="random")
    with organization_schema(tenant), pytest.raises(IntegrityError), transaction.atomic():
        LlmSettings.objects.create(pk=1, allowed_models=[f"m{i}" for i in range(201)])


def test_models_lists_only_the_allowed_chat_models(two_tenants: tuple[Organization, Organization], key_a: str) -> None:
    tenant_a, _ = two_tenants
    everything = {model.id for model in gateway_client(key_a).models.list()}
    assert {"simulated-mini", "simulated-pro", "simulated-embedding"} <= everything
    _allow(tenant_a, ["simulated-pro"])
    listed = {model.id for model in gateway_client(key_a).models.list()}
    assert "simulated-pro" in listed and "simulated-mini" not in listed
    assert "simulated-embedding" in listed  # the allowed list is of chat models; embeddings stay
