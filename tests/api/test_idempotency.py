from __future__ import annotations

import datetime as dt
import json

from django.utils import timezone

from apps.api.models import IdempotencyKey
from apps.api.services import idempotency_claim, idempotency_purge
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from tests.conftest import ApiClientFor


def test_a_secret_in_a_created_answer_is_never_stored_and_a_replay_shows_null(
    two_tenants: tuple[Organization, Organization], api_client_for: ApiClientFor
) -> None:
    client = api_client_for(two_tenants[0])
    body = {"url": "http://127.0.0.1:9/hooks", "events": ["job.succeeded"]}
    first = client.post("/api/v1/webhooks", body, format="json", HTTP_IDEMPOTENCY_KEY="hook-1")
    assert first.status_code == 201, first.content
    secret = first.json()["secret"]
    assert secret
    replay = client.post("/api/v1/webhooks", body, format="json", HTTP_IDEMPOTENCY_KEY="hook-1")
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"] and replay.json()["secret"] is None
    with organization_schema(two_tenants[0]):
        stored = IdempotencyKey.objects.get(key="hook-1")
    assert secret not in json.dumps(stored.response_body)


def test_a_pending_claim_whose_request_died_is_taken_over_after_a_while(tenant: Organization) -> None:
    assert idempotency_claim(key="k", fingerprint="f").record is not None
    assert idempotency_claim(key="k", fingerprint="f").conflict == "in_progress"
    IdempotencyKey.objects.filter(key="k").update(claimed_at=timezone.now() - dt.timedelta(minutes=5))
    assert idempotency_claim(key="k", fingerprint="other").conflict == "reused"
    assert idempotency_claim(key="k", fingerprint="f").record is not None


def test_keys_are_forgotten_after_a_day(tenant: Organization) -> None:
    idempotency_claim(key="old", fingerprint="f")
    idempotency_claim(key="new", fingerprint="f")
    IdempotencyKey.objects.filter(key="old").update(created_at=timezone.now() - dt.timedelta(hours=25))
    assert idempotency_purge() == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]
    # An expired key may be used again for a new request.
    idempotency_claim(key="new", fingerprint="f")
    IdempotencyKey.objects.filter(key="new").update(created_at=timezone.now() - dt.timedelta(hours=25))
    assert idempotency_claim(key="new", fingerprint="different").record is not None
