from __future__ import annotations

import pytest
from django.test import Client

from apps.accounts.models import User
from apps.jobs.models import Job, JobStatus
from apps.rbac.models import Role
from apps.rbac.services import membership_create
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization
from tests.conftest import ApiClientFor
from tests.factories import TEST_ACTOR

HELLO = [{"role": "user", "content": "Say hello"}]


def test_submit_answers_202_with_id_and_queued_status(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    response = client.post("/api/v1/jobs", {"messages": HELLO, "model": "simulated-mini"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued"
    assert response["Location"] == f"/api/v1/jobs/{body['id']}"
    fetched = client.get(f"/api/v1/jobs/{body['id']}").json()
    assert fetched["id"] == body["id"]
    assert fetched["model"] == "simulated-mini"
    assert fetched["result"] is None


def test_prompt_and_policy_are_accepted_instead_of_messages_and_model(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    response = api_client_for(two_tenants[0]).post(
        "/api/v1/jobs", {"prompt": "Hi", "policy": "cheapest"}, format="json"
    )
    assert response.status_code == 202, response.content
    with organization_schema(two_tenants[0]):
        job = Job.objects.get(pk=response.json()["id"])
    assert job.request["messages"] == [{"role": "user", "content": "Hi"}]
    assert job.request["policy"] == "cheapest"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "simulated-mini"}, "messages", "invalid_request"),
        ({"messages": HELLO}, "model", "invalid_request"),
        ({"messages": HELLO, "model": "no-such-model"}, "model", "model_not_found"),
        ({"messages": HELLO, "model": "simulated-mini", "max_tokens": -3}, "max_tokens", "invalid_request"),
        ({"messages": [{"content": "no role"}], "model": "simulated-mini"}, "messages[0].role", "invalid_request"),
        ({"messages": HELLO, "model": "simulated-mini", "agent": "nobody"}, "agent", "agent_not_found"),
    ],
)
def test_bad_submissions_get_400_in_the_one_error_shape_and_create_nothing(
    two_tenants: tuple[Organization, Organization],
    api_client_for: ApiClientFor,
    body: dict[str, object],
    param: str,
    code: str,
) -> None:
    response = api_client_for(two_tenants[0]).post("/api/v1/jobs", body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error")
    assert error["message"]
    with organization_schema(two_tenants[0]):
        assert not Job.objects.exists()


def test_malformed_json_and_wrong_content_type_are_clear_errors(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    broken = client.post("/api/v1/jobs", "{not json", content_type="application/json")
    assert broken.status_code == 400
    assert broken.json()["error"]["code"] == "invalid_json"
    form = client.post("/api/v1/jobs", "a=b", content_type="application/x-www-form-urlencoded")
    assert form.status_code == 415
    assert form.json()["error"]["code"] == "unsupported_media_type"


def test_missing_or_wrong_key_is_401_and_unknown_paths_are_json_404(db: None) -> None:
    anonymous = Client(HTTP_HOST="localhost")
    missing = anonymous.get("/api/v1/jobs")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "authentication_required"
    wrong = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION="Bearer cos_nope_nothing")
    refused = wrong.get("/api/v1/jobs")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    unknown = anonymous.get("/api/v1/nothing-here")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_endpoint"


def test_a_key_never_sees_changes_or_cancels_another_tenants_jobs(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client_a, client_b = api_client_for(two_tenants[0]), api_client_for(two_tenants[1])
    job_a = client_a.post("/api/v1/jobs", {"messages": HELLO, "model": "simulated-mini"}, format="json").json()
    client_b.post("/api/v1/jobs", {"messages": HELLO, "model": "simulated-mini"}, format="json")
    assert client_b.get(f"/api/v1/jobs/{job_a['id']}").status_code == 404
    assert client_b.post(f"/api/v1/jobs/{job_a['id']}/cancel").status_code == 404
    assert client_b.get(f"/api/v1/jobs/{job_a['id']}/events").status_code == 404
    listed_a = [job["id"] for job in client_a.get("/api/v1/jobs").json()["results"]]
    listed_b = [job["id"] for job in client_b.get("/api/v1/jobs").json()["results"]]
    assert listed_a == [job_a["id"]]
    assert len(listed_b) == 1 and listed_b != listed_a
    with organization_schema(two_tenants[0]):
        assert Job.objects.get(pk=job_a["id"]).status == JobStatus.QUEUED


def test_list_is_cursor_paginated_and_filtered_by_status(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    ids = [
        client.post("/api/v1/jobs", {"prompt": f"n{i}", "model": "simulated-mini"}, format="json").json()["id"]
        for i in range(5)
    ]
    client.post(f"/api/v1/jobs/{ids[0]}/cancel")
    first = client.get("/api/v1/jobs?limit=2").json()
    second = client.get(first["next"].replace("http://localhost", "")).json()
    assert len(first["results"]) == 2 and len(second["results"]) == 2
    assert {j["id"] for j in first["results"]}.isdisjoint({j["id"] for j in second["results"]})
    cancelled = client.get("/api/v1/jobs?status=cancelled").json()["results"]
    assert [job["id"] for job in cancelled] == [ids[0]]


def test_idempotency_key_replays_the_first_answer_and_creates_one_job(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    body = {"messages": HELLO, "model": "simulated-mini"}
    first = client.post("/api/v1/jobs", body, format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    again = client.post("/api/v1/jobs", body, format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    other = client.post("/api/v1/jobs", {**body, "max_tokens": 5}, format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    with organization_schema(two_tenants[0]):
        assert Job.objects.count() == 1


def test_idempotency_key_in_progress_gets_409_and_failed_create_frees_the_key(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    from apps.api.services import idempotency_claim

    client = api_client_for(two_tenants[0])
    body = {"messages": HELLO, "model": "simulated-mini"}
    # A create that failed validation does not keep the key: the corrected request may reuse it.
    refused = client.post("/api/v1/jobs", {"model": "simulated-mini"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert refused.status_code == 400
    with organization_schema(two_tenants[0]):
        idempotency_claim(key="k2", fingerprint="whatever-is-running")
    busy = client.post("/api/v1/jobs", body, format="json", HTTP_IDEMPOTENCY_KEY="k2")
    assert busy.status_code in (409, 422)
    assert client.post("/api/v1/jobs", body, format="json", HTTP_IDEMPOTENCY_KEY="k1").status_code == 202


def test_keys_are_kept_per_organization(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    body = {"messages": HELLO, "model": "simulated-mini"}
    a = api_client_for(two_tenants[0]).post("/api/v1/jobs", body, format="json", HTTP_IDEMPOTENCY_KEY="same")
    b = api_client_for(two_tenants[1]).post("/api/v1/jobs", body, format="json", HTTP_IDEMPOTENCY_KEY="same")
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


def test_cancel_a_waiting_job_then_a_finished_job_answers_409(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    job = client.post("/api/v1/jobs", {"messages": HELLO, "model": "simulated-mini"}, format="json").json()
    cancelled = client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "job_finished"


def test_a_member_session_on_the_portal_host_uses_the_api_and_a_stranger_is_refused(
    two_tenants: tuple[Organization, Organization],
) -> None:
    organization_a = two_tenants[0]
    member = User.objects.create_user(email="member@a.example.com", password="x" * 16)
    membership_create(user=member, organization=organization_a, role=Role.DEVELOPER, actor=TEST_ACTOR)
    stranger = User.objects.create_user(email="stranger@b.example.com", password="x" * 16)
    tenant_connection().set_schema_to_public()
    browser = Client(HTTP_HOST=f"{organization_a.slug}.localhost")
    browser.force_login(member)
    assert browser.get("/api/v1/jobs").status_code == 200
    other = Client(HTTP_HOST=f"{organization_a.slug}.localhost")
    other.force_login(stranger)
    refused = other.get("/api/v1/jobs")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"


def test_openapi_schema_and_interactive_docs_are_served(db: None) -> None:
    client = Client(HTTP_HOST="localhost")
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/cancel", "/api/v1/agents"} <= set(paths)
    assert "post" in paths["/api/v1/jobs"]
    schemes = schema.json()["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {**schemes["ApiKey"], "type": "http", "scheme": "bearer"}
    assert {"ApiKey": []} in paths["/api/v1/jobs"]["post"]["security"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
