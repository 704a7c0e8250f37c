"""Endpoints: validation, encrypted secrets, rotation, audit, and which endpoints an event reaches."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from django.db import transaction

from apps.audit.models import AuditEvent
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from apps.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from apps.webhooks.services import (
    WebhookInvalid,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_secrets,
    webhook_endpoint_update,
    webhook_event_emit,
    webhook_secret_rotate,
    webhook_secrets_reencrypt,
)
from tests.factories import TEST_ACTOR
from tests.webhooks.conftest import SentTasks

URL = "http://127.0.0.1:9/hooks"


def _endpoint(organization: Organization, events: list[str], url: str = URL) -> WebhookEndpoint:
    return webhook_endpoint_create(organization=organization, actor=TEST_ACTOR, url=url, events=events)[0]


def test_create_returns_the_secret_once_and_keeps_it_encrypted(tenant: Organization) -> None:
    endpoint, secret = webhook_endpoint_create(
        organization=tenant, actor=TEST_ACTOR, url=URL, events=["job.succeeded", "job.succeeded"], description=" ci "
    )
    assert secret.startswith("whsec_") and len(secret) > 40
    stored = WebhookEndpoint.objects.get(pk=endpoint.pk)
    assert secret.encode() not in bytes(stored.secret_ciphertext)
    assert stored.secret_hint == secret[-4:]
    assert (stored.events, stored.description, stored.is_active) == (["job.succeeded"], "ci", True)
    assert webhook_endpoint_secrets(organization=tenant, endpoint=stored) == [secret]


def test_a_secret_copied_to_another_endpoint_does_not_decrypt(tenant: Organization) -> None:
    first, second = _endpoint(tenant, ["*"]), _endpoint(tenant, ["*"])
    second.secret_nonce, second.secret_ciphertext = first.secret_nonce, first.secret_ciphertext
    with pytest.raises(InvalidTag):
        webhook_endpoint_secrets(organization=tenant, endpoint=second)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/hook",
        "http://[::1]/hook",
        "http://[::ffff:192.168.1.1]/hook",
    ],
)
def test_private_targets_are_refused_unless_the_setting_allows_them(
    tenant: Organization, settings: Any, url: str
) -> None:
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = False
    with pytest.raises(WebhookInvalid) as refused:
        _endpoint(tenant, ["*"], url=url)
    assert refused.value.param == "url"
    assert not WebhookEndpoint.objects.exists()
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = True
    assert _endpoint(tenant, ["*"], url=url).url == url


@pytest.mark.parametrize(
    ("url", "events", "param"),
    [
        ("ftp://example.com/x", ["*"], "url"),
        ("javascript:alert(1)", ["*"], "url"),
        ("http://user:pw@127.0.0.1/x", ["*"], "url"),
        ("http:///nohost", ["*"], "url"),
        (URL, [], "events"),
        (URL, ["job.nope"], "events"),
        (URL, ["nojob.*"], "events"),
        (URL, "job.succeeded", "events"),
        (URL, [3], "events"),
    ],
)
def test_bad_urls_and_event_lists_are_refused(tenant: Organization, url: str, events: Any, param: str) -> None:
    with pytest.raises(WebhookInvalid) as refused:
        _endpoint(tenant, events, url=url)
    assert refused.value.param == param


def test_changes_are_audited_without_the_url_path_or_secret(tenant: Organization) -> None:
    endpoint, secret = webhook_endpoint_create(
        organization=tenant, actor=TEST_ACTOR, url="http://127.0.0.1:9/hooks/tok3n-in-path", events=["*"]
    )
    webhook_endpoint_update(organization=tenant, actor=TEST_ACTOR, endpoint_id=endpoint.pk, events=["job.*"])
    webhook_endpoint_update(organization=tenant, actor=TEST_ACTOR, endpoint_id=endpoint.pk, events=["job.*"])
    _, new_secret = webhook_secret_rotate(organization=tenant, actor=TEST_ACTOR, endpoint_id=endpoint.pk)
    webhook_endpoint_delete(organization=tenant, actor=TEST_ACTOR, endpoint_id=endpoint.pk)
    events = list(AuditEvent.objects.filter(target_id=str(endpoint.pk)).order_by("id"))
    assert [event.action for event in events] == [
        "webhook_endpoint.created",
        "webhook_endpoint.updated",  # the second update changed nothing: not recorded
        "webhook_endpoint.secret_rotated",
        "webhook_endpoint.deleted",
    ]
    assert events[1].metadata["changed"] == ["events"]
    assert events[0].metadata["host"] == "127.0.0.1"
    text = repr([(e.target_label, e.metadata) for e in events])
    assert "tok3n" not in text and secret not in text and new_secret not in text
    assert not WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()


def test_update_changes_only_the_given_fields(tenant: Organization) -> None:
    endpoint = _endpoint(tenant, ["job.succeeded"])
    updated = webhook_endpoint_update(
        organization=tenant, actor=TEST_ACTOR, endpoint_id=endpoint.pk, is_active=False, description="paused"
    )
    assert (updated.url, updated.events, updated.is_active, updated.description) == (
        URL,
        ["job.succeeded"],
        False,
        "paused",
    )


def test_a_rotated_secret_keeps_signing_during_its_grace_period_only(tenant: Organization) -> None:
    endpoint, old = webhook_endpoint_create(organization=tenant, actor=TEST_ACTOR, url=URL, events=["*"])
    rotated, new = webhook_secret_rotate(organization=tenant, actor=TEST_ACTOR, endpoint_id=endpoint.pk, grace_s=60)
    assert new != old
    assert webhook_endpoint_secrets(organization=tenant, endpoint=WebhookEndpoint.objects.get(pk=endpoint.pk)) == [
        new,
        old,
    ]
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(previous_secret_expires_at=rotated.created_at)
    assert webhook_endpoint_secrets(organization=tenant, endpoint=WebhookEndpoint.objects.get(pk=endpoint.pk)) == [new]
    _, newest = webhook_secret_rotate(organization=tenant, actor=TEST_ACTOR, endpoint_id=endpoint.pk, grace_s=0)
    assert webhook_endpoint_secrets(organization=tenant, endpoint=WebhookEndpoint.objects.get(pk=endpoint.pk)) == [
        newest
    ]
    with pytest.raises(WebhookInvalid):
        webhook_secret_rotate(organization=tenant, actor=TEST_ACTOR, endpoint_id=endpoint.pk, grace_s=30 * 86400)


def test_an_event_reaches_each_active_subscribed_endpoint_once_after_commit(
    tenant: Organization, sent_tasks: SentTasks, django_capture_on_commit_callbacks: Any
) -> None:
    exact = _endpoint(tenant, ["job.succeeded", "job.failed"])
    family = _endpoint(tenant, ["job.*"])
    everything = _endpoint(tenant, ["*"])
    _endpoint(tenant, ["run.succeeded"])
    disabled = _endpoint(tenant, ["*"])
    webhook_endpoint_update(organization=tenant, actor=TEST_ACTOR, endpoint_id=disabled.pk, is_active=False)
    with django_capture_on_commit_callbacks(execute=True):
        deliveries = webhook_event_emit(
            organization=tenant, event_type="job.succeeded", payload={"job": {"id": "j1", "cost_usd": 0.5}}
        )
        assert sent_tasks == []  # not before the commit
    assert {d.endpoint_id for d in deliveries} == {exact.pk, family.pk, everything.pk}
    assert len({d.event_id for d in deliveries}) == 1
    stored = WebhookDelivery.objects.filter(pk__in=[d.pk for d in deliveries])
    assert {(d.delivery_status, d.attempts, d.event_type) for d in stored} == {
        (DeliveryStatus.PENDING, 0, "job.succeeded")
    }
    assert sorted(task["delivery_id"] for task in sent_tasks) == sorted(str(d.pk) for d in deliveries)
    assert {task["tenant_id"] for task in sent_tasks} == {tenant.pk}


def test_an_event_for_one_endpoint_goes_there_whatever_it_subscribed_to(
    tenant: Organization, sent_tasks: SentTasks
) -> None:
    chosen = _endpoint(tenant, ["run.succeeded"])
    _endpoint(tenant, ["*"])
    disabled = _endpoint(tenant, ["*"])
    webhook_endpoint_update(organization=tenant, actor=TEST_ACTOR, endpoint_id=disabled.pk, is_active=False)
    [delivery] = webhook_event_emit(organization=tenant, event_type="job.failed", payload={}, endpoint_id=chosen.pk)
    assert delivery.endpoint_id == chosen.pk
    assert webhook_event_emit(organization=tenant, event_type="job.failed", payload={}, endpoint_id=disabled.pk) == []
    gone = _endpoint(tenant, ["*"])
    webhook_endpoint_delete(organization=tenant, actor=TEST_ACTOR, endpoint_id=gone.pk)
    assert webhook_event_emit(organization=tenant, event_type="job.failed", payload={}, endpoint_id=gone.pk) == []


def test_no_task_is_sent_when_the_emitting_transaction_rolls_back(
    tenant: Organization, sent_tasks: SentTasks, django_capture_on_commit_callbacks: Any
) -> None:
    _endpoint(tenant, ["*"])

    class Abort(Exception):
        pass

    def emit_then_fail() -> None:
        with transaction.atomic():
            webhook_event_emit(organization=tenant, event_type="job.succeeded", payload={})
            raise Abort

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(Abort):
        emit_then_fail()
    assert sent_tasks == []
    assert not WebhookDelivery.objects.exists()


def test_an_organization_never_reaches_another_organizations_endpoints(
    two_tenants: tuple[Organization, Organization], sent_tasks: SentTasks
) -> None:
    a, b = two_tenants
    endpoint = _endpoint(a, ["*"])
    assert webhook_event_emit(organization=b, event_type="job.succeeded", payload={}) == []
    assert webhook_event_emit(organization=b, event_type="job.succeeded", payload={}, endpoint_id=endpoint.pk) == []
    with pytest.raises(WebhookEndpoint.DoesNotExist):
        webhook_endpoint_update(organization=b, actor=TEST_ACTOR, endpoint_id=endpoint.pk, is_active=False)
    with pytest.raises(WebhookEndpoint.DoesNotExist):
        webhook_endpoint_delete(organization=b, actor=TEST_ACTOR, endpoint_id=endpoint.pk)
    with pytest.raises(WebhookEndpoint.DoesNotExist):
        webhook_secret_rotate(organization=b, actor=TEST_ACTOR, endpoint_id=endpoint.pk)
    with organization_schema(a):
        assert WebhookEndpoint.objects.get(pk=endpoint.pk).is_active
        assert len(webhook_event_emit(organization=a, event_type="job.succeeded", payload={})) == 1


def test_a_secret_sealed_for_one_organization_does_not_open_in_another(
    two_tenants: tuple[Organization, Organization],
) -> None:
    a, b = two_tenants
    endpoint = _endpoint(a, ["*"])
    with pytest.raises(InvalidTag):
        webhook_endpoint_secrets(organization=b, endpoint=endpoint)


def test_secrets_are_reencrypted_under_a_new_key(tenant: Organization, settings: Any) -> None:
    k1, k2 = base64.b64encode(b"1" * 32).decode(), base64.b64encode(b"2" * 32).decode()
    settings.CREDENTIALS_ENCRYPTION_KEYS = f"k1:{k1}"
    endpoint, old = webhook_endpoint_create(organization=tenant, actor=TEST_ACTOR, url=URL, events=["*"])
    _, secret = webhook_secret_rotate(organization=tenant, actor=TEST_ACTOR, endpoint_id=endpoint.pk, grace_s=600)
    settings.CREDENTIALS_ENCRYPTION_KEYS = f"k2:{k2},k1:{k1}"
    assert webhook_secrets_reencrypt(organization=tenant) == 1
    assert webhook_secrets_reencrypt(organization=tenant) == 0
    settings.CREDENTIALS_ENCRYPTION_KEYS = f"k2:{k2}"  # k1 retired
    stored = WebhookEndpoint.objects.get(pk=endpoint.pk)
    assert (stored.secret_key_id, stored.previous_secret_key_id) == ("k2", "k2")
    assert webhook_endpoint_secrets(organization=tenant, endpoint=stored) == [secret, old]
