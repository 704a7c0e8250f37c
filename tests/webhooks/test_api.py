"""REST API v1 for webhooks: endpoints, secrets shown once, test events, delivery logs, isolation."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from apps.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from apps.webhooks.services import webhook_delivery_attempt, webhook_endpoint_create, webhook_event_emit
from tests.conftest import ApiClientFor
from tests.factories import TEST_ACTOR
from tests.webhooks.conftest import SentTasks
from tests.webhooks.receiver import http_receiver

URL = "http://127.0.0.1:9/hooks"


def _create(client: Any, **overrides: Any) -> Any:
    body = {"url": URL, "events": ["job.succeeded"], "description": "ci", **overrides}
    return client.post("/api/v1/webhooks", body, format="json")


def test_create_shows_the_secret_once_and_never_again(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    response = _create(client)
    assert response.status_code == 201, response.content
    body = response.json()
    secret = body["secret"]
    assert secret.startswith("whsec_") and body["secret_last4"] == secret[-4:]
    assert (body["url"], body["events"], body["description"], body["is_active"]) == (
        URL,
        ["job.succeeded"],
        "ci",
        True,
    )
    assert response["Location"] == f"/api/v1/webhooks/{body['id']}"
    detail = client.get(f"/api/v1/webhooks/{body['id']}")
    listing = client.get("/api/v1/webhooks")
    assert detail.status_code == 200 and listing.status_code == 200
    assert "secret" not in detail.json() and secret not in detail.content.decode()
    assert [item["id"] for item in listing.json()["results"]] == [body["id"]]
    assert secret not in listing.content.decode()


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"events": ["job.exploded"]}, "events"),
        ({"events": []}, "events"),
        ({"events": None}, "events"),
    ],
)
def test_bad_endpoints_get_400_naming_the_field(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor, overrides: dict[str, Any], param: str
) -> None:
    response = _create(api_client_for(two_tenants[0]), **overrides)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["param"], error["type"]) == (param, "invalid_request_error")
    with organization_schema(two_tenants[0]):
        assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:8000/", "http://[::1]/"])
def test_private_targets_get_400_unless_the_setting_allows_them(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor, settings: Any, url: str
) -> None:
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = False
    response = _create(api_client_for(two_tenants[0]), url=url)
    assert response.status_code == 400 and response.json()["error"]["param"] == "url"
    assert "forbidden address" in response.json()["error"]["message"]


def test_patch_changes_the_given_fields_and_delete_removes_the_endpoint(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    endpoint_id = _create(client).json()["id"]
    patched = client.patch(f"/api/v1/webhooks/{endpoint_id}", {"is_active": False, "events": ["*"]}, format="json")
    assert patched.status_code == 200, patched.content
    assert (patched.json()["is_active"], patched.json()["events"], patched.json()["url"]) == (False, ["*"], URL)
    bad = client.patch(f"/api/v1/webhooks/{endpoint_id}", {"url": "gopher://x"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "url"
    assert client.delete(f"/api/v1/webhooks/{endpoint_id}").status_code == 204
    assert client.get(f"/api/v1/webhooks/{endpoint_id}").status_code == 404
    assert client.delete(f"/api/v1/webhooks/{endpoint_id}").status_code == 404


def test_rotate_secret_returns_a_new_secret_with_a_grace_period(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    created = _create(client).json()
    rotated = client.post(f"/api/v1/webhooks/{created['id']}/rotate-secret", {}, format="json")
    assert rotated.status_code == 200, rotated.content
    assert rotated.json()["secret"] not in ("", created["secret"])
    assert rotated.json()["previous_secret_expires_at"] is not None
    ended = client.post(
        f"/api/v1/webhooks/{created['id']}/rotate-secret", {"grace_period_seconds": 0}, format="json"
    ).json()
    assert ended["previous_secret_expires_at"] is None
    too_long = client.post(
        f"/api/v1/webhooks/{created['id']}/rotate-secret", {"grace_period_seconds": 10**9}, format="json"
    )
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "grace_period_seconds"


def test_a_test_event_reaches_a_real_receiver_signed_with_the_secret_and_shows_in_the_log(
    two_tenants: tuple[Organization, Organization],
    api_client_for: ApiClientFor,
    sent_tasks: SentTasks,
    django_capture_on_commit_callbacks: Any,
) -> None:
    a = two_tenants[0]
    client = api_client_for(a)
    with http_receiver() as receiver:
        created = _create(client, url=receiver.url, events=["run.succeeded"]).json()
        receiver.secret = created["secret"]
        with django_capture_on_commit_callbacks(execute=True):
            tested = client.post(f"/api/v1/webhooks/{created['id']}/test")
        assert tested.status_code == 202, tested.content
        delivery = tested.json()
        assert (delivery["event_type"], delivery["status"], delivery["attempts"]) == ("webhook.test", "pending", 0)
        assert [task["delivery_id"] for task in sent_tasks] == [delivery["id"]]
        with organization_schema(a):
            assert webhook_delivery_attempt(organization=a, delivery_id=delivery["id"]) == "succeeded"
    [request] = receiver.received
    assert request.signature_ok is True and request.headers["CognitionOS-Event"] == "webhook.test"
    log = client.get(f"/api/v1/webhooks/{created['id']}/deliveries").json()["results"]
    assert [(d["id"], d["status"], d["attempts"], d["last_response_status"]) for d in log] == [
        (delivery["id"], "succeeded", 1, 200)
    ]
    single = client.get(f"/api/v1/webhooks/deliveries/{delivery['id']}").json()
    assert single["payload"]["endpoint_id"] == created["id"] and single["delivered_at"] is not None


def test_testing_a_disabled_endpoint_is_a_conflict(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    endpoint_id = _create(client).json()["id"]
    client.patch(f"/api/v1/webhooks/{endpoint_id}", {"is_active": False}, format="json")
    response = client.post(f"/api/v1/webhooks/{endpoint_id}/test")
    assert response.status_code == 409 and response.json()["error"]["code"] == "endpoint_disabled"


def test_the_delivery_log_is_cursor_paginated_and_filtered_by_status(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor, sent_tasks: SentTasks
) -> None:
    a = two_tenants[0]
    client = api_client_for(a)
    endpoint_id = _create(client, events=["*"]).json()["id"]
    with organization_schema(a):
        ids = [webhook_event_emit(organization=a, event_type="job.succeeded", payload={"n": n})[0].pk for n in range(5)]
        WebhookDelivery.objects.filter(pk__in=ids[:2]).update(
            status=DeliveryStatus.FAILED, attempts=8, next_attempt_at=None, finished_at=timezone.now()
        )
    seen: list[str] = []
    url: str | None = f"/api/v1/webhooks/{endpoint_id}/deliveries?limit=2"
    pages = 0
    while url:
        page = client.get(url).json()
        assert len(page["results"]) <= 2
        seen += [d["id"] for d in page["results"]]
        url = page["next"]
        pages += 1
    assert pages == 3 and sorted(seen) == sorted(str(i) for i in ids) and len(set(seen)) == 5
    failed = client.get(f"/api/v1/webhooks/{endpoint_id}/deliveries?status=failed").json()["results"]
    assert sorted(d["id"] for d in failed) == sorted(str(i) for i in ids[:2])
    assert client.get(f"/api/v1/webhooks/{endpoint_id}/deliveries?status=bogus").status_code == 400


def test_retry_of_a_failed_delivery_is_a_new_delivery_of_the_same_event(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor, sent_tasks: SentTasks
) -> None:
    a = two_tenants[0]
    client = api_client_for(a)
    endpoint_id = _create(client, events=["*"]).json()["id"]
    with organization_schema(a):
        [delivery] = webhook_event_emit(organization=a, event_type="job.failed", payload={})
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.FAILED, attempts=8, next_attempt_at=None, finished_at=timezone.now()
        )
    retried = client.post(f"/api/v1/webhooks/deliveries/{delivery.pk}/retry")
    assert retried.status_code == 202, retried.content
    body = retried.json()
    assert body["id"] != str(delivery.pk) and body["redelivery_of"] == str(delivery.pk)
    assert (body["event_id"], body["status"]) == (str(delivery.event_id), "pending")
    client.patch(f"/api/v1/webhooks/{endpoint_id}", {"is_active": False}, format="json")
    refused = client.post(f"/api/v1/webhooks/deliveries/{delivery.pk}/retry")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "endpoint_disabled"


def test_a_retried_create_with_the_same_idempotency_key_makes_one_endpoint(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    first = client.post("/api/v1/webhooks", {"url": URL, "events": ["*"]}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = client.post("/api/v1/webhooks", {"url": URL, "events": ["*"]}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true" and again.json()["id"] == first.json()["id"]
    with organization_schema(two_tenants[0]):
        assert WebhookEndpoint.objects.count() == 1


def test_another_organizations_key_gets_404_for_endpoints_and_deliveries(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor, sent_tasks: SentTasks
) -> None:
    a, b = two_tenants
    endpoint, _ = webhook_endpoint_create(organization=a, actor=TEST_ACTOR, url=URL, events=["*"])
    with organization_schema(a):
        [delivery] = webhook_event_emit(organization=a, event_type="job.succeeded", payload={"secret": "of A"})
    client_b = api_client_for(b)
    base = f"/api/v1/webhooks/{endpoint.pk}"
    answers = [
        client_b.get(base),
        client_b.patch(base, {"is_active": False}, format="json"),
        client_b.post(f"{base}/rotate-secret", {}, format="json"),
        client_b.post(f"{base}/test"),
        client_b.get(f"{base}/deliveries"),
        client_b.get(f"/api/v1/webhooks/deliveries/{delivery.pk}"),
        client_b.post(f"/api/v1/webhooks/deliveries/{delivery.pk}/retry"),
        client_b.delete(base),
    ]
    assert [answer.status_code for answer in answers] == [404] * len(answers)
    assert all(answer.json()["error"]["type"] == "not_found_error" for answer in answers)
    assert client_b.get("/api/v1/webhooks").json()["results"] == []
    with organization_schema(a):
        stored = WebhookEndpoint.objects.get(pk=endpoint.pk)
        assert stored.is_active and stored.secret_key_id == endpoint.secret_key_id
        assert stored.secret_ciphertext == endpoint.secret_ciphertext
        assert WebhookDelivery.objects.filter(endpoint=stored).count() == 1
    listed_by_a = api_client_for(a).get("/api/v1/webhooks").json()["results"]
    assert [item["id"] for item in listed_by_a] == [str(endpoint.pk)]


def test_without_a_key_the_webhook_api_answers_401(two_tenants: tuple[Organization, Organization]) -> None:
    response = Client(HTTP_HOST="localhost").get("/api/v1/webhooks")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_the_openapi_schema_describes_the_webhook_api(two_tenants: tuple[Organization, Organization]) -> None:
    schema = Client(HTTP_HOST="localhost").get("/api/schema/?format=json").json()
    paths = schema["paths"]
    for path in (
        "/api/v1/webhooks",
        "/api/v1/webhooks/{endpoint_id}",
        "/api/v1/webhooks/{endpoint_id}/rotate-secret",
        "/api/v1/webhooks/{endpoint_id}/test",
        "/api/v1/webhooks/{endpoint_id}/deliveries",
        "/api/v1/webhooks/deliveries/{delivery_id}/retry",
    ):
        assert path in paths, path
    created = paths["/api/v1/webhooks"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    component = schema["components"]["schemas"][created.rsplit("/", 1)[1]]
    assert "secret" in component["properties"]
    listed = paths["/api/v1/webhooks/{endpoint_id}/deliveries"]["get"]
    assert {"status", "cursor", "limit"} <= {parameter["name"] for parameter in listed["parameters"]}
    assert "409" in paths["/api/v1/webhooks/deliveries/{delivery_id}/retry"]["post"]["responses"]
