"""Every failure under /api/ (and /v1/) answers JSON in the one error shape, whatever fails."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client, RequestFactory

from apps.accounts.models import User
from apps.api.views import csrf_failure
from apps.apikeys.services import apikey_create
from apps.rbac.models import Role
from apps.rbac.services import membership_create
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.conftest import ApiClientFor
from tests.factories import TEST_ACTOR

JOB = {"prompt": "hello", "model": "gpt-4o-mini"}


def _error(response: object, status: int, code: str) -> dict[str, object]:
    assert getattr(response, "status_code", None) == status, getattr(response, "content", b"")[:300]
    assert response["Content-Type"].startswith("application/json")  # type: ignore[index]
    body = json.loads(response.content)  # type: ignore[attr-defined]
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert {"message", "type", "code", "param"} <= set(body["error"])
    return body["error"]  # type: ignore[no-any-return]


@pytest.fixture
def member(two_tenants: tuple[Organization, Organization]) -> User:
    user = User.objects.create_user(email="member@a.example.com", password="x" * 16)
    membership_create(user=user, organization=two_tenants[0], role=Role.DEVELOPER, actor=TEST_ACTOR)
    tenant_connection().set_schema_to_public()
    return user


def test_a_write_with_a_key_and_a_session_cookie_is_json_never_the_csrf_page(
    two_tenants: tuple[Organization, Organization], member: User
) -> None:
    key = apikey_create(organization=two_tenants[0], name="tests", actor=TEST_ACTOR).key
    browser = Client(HTTP_HOST="localhost", enforce_csrf_checks=True)
    browser.force_login(member)
    # The key authenticates the call; the session cookie beside it changes nothing.
    created = browser.post(
        "/api/v1/budgets",
        {"scope": "organization", "period": "day", "limit_usd": "5"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert created.status_code == 201, created.content
    # A path no view serves (an id that is not a UUID) is a 404, not Django's HTML CSRF page.
    unknown = browser.post("/api/v1/jobs/not-a-uuid/cancel", {}, HTTP_AUTHORIZATION=f"Bearer {key}")
    _error(unknown, 404, "unknown_endpoint")


def test_a_session_write_without_its_csrf_token_is_refused_in_the_api_shape(
    two_tenants: tuple[Organization, Organization], member: User
) -> None:
    browser = Client(HTTP_HOST=f"{two_tenants[0].slug}.localhost", enforce_csrf_checks=True)
    browser.force_login(member)
    refused = browser.post("/api/v1/jobs", JOB, content_type="application/json")
    assert "X-CSRFToken" in str(_error(refused, 403, "csrf_failed")["message"])


def test_the_csrf_failure_view_answers_json_on_api_paths_and_the_page_elsewhere() -> None:
    factory = RequestFactory()
    for path in ("/api/v1/jobs", "/v1/chat/completions"):
        _error(csrf_failure(factory.post(path), reason="CSRF cookie not set."), 403, "csrf_failed")
    page = csrf_failure(factory.post("/accounts/login/"), reason="CSRF cookie not set.")
    assert page.status_code == 403 and page["Content-Type"].startswith("text/html")


def test_unknown_paths_under_api_and_v1_answer_json(db: None) -> None:
    client = Client(HTTP_HOST="localhost")
    _error(client.get("/api/nothing/here"), 404, "unknown_endpoint")
    _error(client.post("/v1/nothing/here", {}), 404, "unknown_endpoint")


def test_deeply_nested_json_is_a_400_not_a_server_error_and_nan_is_not_json(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    deep = "[" * 100_000 + "]" * 100_000
    response = client.post("/api/v1/jobs", deep, content_type="application/json")
    _error(response, 400, "json_too_deep")
    # Deep enough to break a walk later, shallow enough for json to parse: refused all the same.
    nested: object = "x"
    for _ in range(200):
        nested = {"a": nested}
    response = client.post("/api/v1/jobs", {**JOB, "tools": nested}, format="json")
    _error(response, 400, "json_too_deep")
    # The parser is ours now: it must stay as strict as DRF's about NaN (PostgreSQL's JSON has none).
    nan = '{"prompt": "hi", "model": "gpt-4o-mini", "tools": [NaN]}'
    _error(client.post("/api/v1/jobs", nan, content_type="application/json"), 400, "invalid_json")


def test_a_body_over_the_limit_is_a_413_in_the_api_shape(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor, settings: Any
) -> None:
    settings.API_MAX_REQUEST_BYTES = 10_000
    client = api_client_for(two_tenants[0])
    big = json.dumps({**JOB, "prompt": "x" * 10_000})
    for path in ("/api/v1/jobs", "/api/v1/agents", "/api/v1/workflows", "/api/v1/webhooks", "/api/v1/budgets"):
        _error(client.post(path, big, content_type="application/json"), 413, "request_too_large")
    # A body just under the limit is read and judged on its merits.
    fits = client.post("/api/v1/jobs", json.dumps({**JOB, "prompt": "x" * 9_000}), content_type="application/json")
    assert fits.status_code == 202, fits.content


def test_a_body_announcing_more_than_the_limit_is_refused_before_it_is_read(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor, settings: Any
) -> None:
    settings.API_MAX_REQUEST_BYTES = 10_000
    client = api_client_for(two_tenants[0])
    response = client.generic(
        "POST", "/api/v1/jobs", json.dumps(JOB), content_type="application/json", CONTENT_LENGTH="50000000"
    )
    _error(response, 413, "request_too_large")


def test_the_budgets_list_answers_as_the_schema_declares(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    schema = Client(HTTP_HOST="localhost").get("/api/schema/?format=json").json()
    declared = schema["paths"]["/api/v1/budgets"]["get"]["responses"]["200"]["content"]["application/json"]
    component = schema["components"]["schemas"][declared["schema"]["$ref"].rsplit("/", 1)[1]]
    assert component["type"] == "object" and component["properties"]["results"]["type"] == "array"
    listed = api_client_for(two_tenants[0]).get("/api/v1/budgets").json()
    assert set(listed) == {"results"} and listed["results"] == []


def test_every_operation_declares_its_error_answers_in_the_one_shape(db: None) -> None:
    schema = Client(HTTP_HOST="localhost").get("/api/schema/?format=json").json()
    error = schema["components"]["schemas"]["ErrorOutput"]
    assert error["required"] == ["error"]
    operations = {(method, path): op for path, item in schema["paths"].items() for method, op in item.items()}
    for (method, path), operation in operations.items():
        responses = operation["responses"]
        assert {"400", "401", "403", "429"} <= set(responses), (method, path)
        if "{" in path:
            assert "404" in responses, (method, path)
        for status, response in responses.items():
            if status.startswith("4"):
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOutput"}
    create = operations[("post", "/api/v1/jobs")]
    assert {"409", "413", "415", "422"} <= set(create["responses"])
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in create["parameters"])


def test_check_constraints_and_date_filters_are_400s_not_server_errors(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    agent = {"name": "hot", "model": "gpt-4o-mini"}
    _error(client.post("/api/v1/agents", {**agent, "temperature": 413}, format="json"), 400, "invalid_request")
    _error(client.post("/api/v1/agents", {**agent, "min_quality": 9}, format="json"), 400, "invalid_request")
    # Python takes offsets up to 24 h, PostgreSQL up to 16 h: the filter converts to UTC first.
    listed = client.get("/api/v1/jobs", {"created_before": "2030-04-06T18:56:10-17:48"})
    assert listed.status_code == 200, listed.content
    _error(client.get("/api/v1/runs", {"created_after": "9999-12-31T23:00:00-17:00"}), 400, "invalid_request")
