"""The portal's webhooks pages: endpoints (add, change, delete) with the API's validation at the
field, the signing secret shown once (made and rotated), test events, the delivery log with a
delivery's detail and retry; per organization and per role."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.portal import webhooks_pages
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from apps.webhooks.models import WebhookDelivery, WebhookEndpoint
from apps.webhooks.services import (
    webhook_delivery_attempt,
    webhook_endpoint_create,
    webhook_endpoint_secrets,
    webhook_event_emit,
)
from apps.work.models import WorkStatus
from apps.work.services import WORK_RUN_TASK
from cognitionos.celery import app as celery_app
from tests.factories import TEST_ACTOR, member_make
from tests.portal.conftest import ClientFor
from tests.webhooks.receiver import http_receiver

SECRET = re.compile(r"whsec_[A-Za-z0-9_-]{20,}")
URL = "http://127.0.0.1:9/hooks/in"  # loopback: allowed by the test settings (OUTBOUND_ALLOW_PRIVATE_NETWORKS)


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The runtime's run messages are recorded, not sent to a broker (attempts run in the test)."""
    sent: list[dict[str, Any]] = []

    def send_task(name: str, kwargs: dict[str, Any], countdown: float | None = None) -> None:
        assert name == WORK_RUN_TASK
        sent.append(kwargs)

    monkeypatch.setattr(celery_app, "send_task", send_task)
    return sent


def signed_in(client_for: ClientFor, organization: Organization, role: str) -> tuple[Client, User]:
    user = member_make(organization=organization, role=role)
    client = client_for(f"{organization.slug}.localhost")
    client.force_login(user)
    return client, user


def shown_secret(html: str) -> str:
    found = re.search(r'id="webhook-secret"[^>]*value="(whsec_[^"]+)"', html)
    assert found, "the secret is not on the page"
    return found.group(1)


def endpoint_make(organization: Organization, url: str = URL, events: list[str] | None = None) -> WebhookEndpoint:
    endpoint, _ = webhook_endpoint_create(
        organization=organization, actor=TEST_ACTOR, url=url, events=events or ["job.*"]
    )
    return endpoint


def test_an_endpoint_is_added_changed_and_deleted(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, user = signed_in(client_for, organization, "developer")
    empty = client.get("/webhooks/")
    assert empty.status_code == 200
    html = empty.content.decode()
    assert 'href="/webhooks/"' in html and 'aria-current="page"' in html  # in the nav, current
    assert "No endpoints yet." in html and "Add an endpoint" in html
    assert '<label for="id_url">Endpoint URL</label>' in html and 'value="job.succeeded"' in html
    assert 'value="*"' in html and 'value="run.*"' in html  # the catalogue, its families and "every event"

    created = client.post(
        "/webhooks/", {"url": URL, "description": "billing <b>sync</b>", "events": ["job.succeeded", "run.*"]}
    )
    assert created.status_code == 200
    secret = shown_secret(created.content.decode())
    with organization_schema(organization):
        endpoint = WebhookEndpoint.objects.get()
        assert endpoint.events == ["job.succeeded", "run.*"] and endpoint.is_active
        assert endpoint.created_by_label == user.email
        assert webhook_endpoint_secrets(organization=organization, endpoint=endpoint) == [secret]
        assert AuditEvent.objects.filter(action="webhook_endpoint.created", actor_label=user.email).exists()

    listed = client.get("/webhooks/").content.decode()
    assert URL in listed and "billing &lt;b&gt;sync&lt;/b&gt;" in listed and "<b>sync" not in listed
    page = client.get(f"/webhooks/{endpoint.pk}/")
    assert page.status_code == 200 and b"No deliveries yet." in page.content

    form = client.get(f"/webhooks/{endpoint.pk}/edit/").content.decode()
    assert f'value="{URL}"' in form and 'value="run.*"' in form and "checked" in form
    changed = client.post(
        f"/webhooks/{endpoint.pk}/edit/",
        {"url": URL.replace("/in", "/v2"), "description": "", "events": ["*"]},  # "Enabled" unticked
    )
    assert changed.status_code == 302 and changed["Location"] == f"/webhooks/{endpoint.pk}/"
    with organization_schema(organization):
        saved = WebhookEndpoint.objects.get(pk=endpoint.pk)
    assert saved.url.endswith("/v2") and saved.events == ["*"] and not saved.is_active and saved.description == ""
    disabled = client.get(f"/webhooks/{endpoint.pk}/").content.decode()
    assert "Disabled" in disabled and "Send test event" not in disabled  # not offered when it can't work

    confirm = client.get(f"/webhooks/{endpoint.pk}/delete/")
    assert confirm.status_code == 200 and b"can't be undone" in confirm.content
    with organization_schema(organization):
        assert WebhookEndpoint.objects.exists()  # a GET deletes nothing
    deleted = client.post(f"/webhooks/{endpoint.pk}/delete/")
    assert deleted.status_code == 302 and deleted["Location"] == "/webhooks/"
    with organization_schema(organization):
        assert not WebhookEndpoint.objects.exists()
        assert AuditEvent.objects.filter(action="webhook_endpoint.deleted", actor_label=user.email).exists()
    assert client.get(f"/webhooks/{endpoint.pk}/").status_code == 404


@pytest.mark.parametrize(
    "case",
    [
        ("http://10.0.0.5/hook", False, "can&#x27;t be sent to this URL"),
        ("http://169.254.169.254/latest/meta-data/", False, "can&#x27;t be sent to this URL"),
        ("ftp://example.com/hook", True, "must start with https://"),
        ("javascript:alert(1)", True, "must start with https://"),
        ("http://127.0.0.1/" + "a" * 2000, True, "at most 2000 characters"),
    ],
)
def test_a_bad_url_is_refused_at_the_field_and_nothing_is_written(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, settings: Any, case: tuple[str, bool, str]
) -> None:
    url, private_allowed, message = case
    organization = two_tenants[0]
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = private_allowed
    client, _ = signed_in(client_for, organization, "admin")
    refused = client.post("/webhooks/", {"url": url, "events": ["job.*"]})
    assert refused.status_code == 400
    html = refused.content.decode()
    error = re.search(r'<p class="field__error" id="id_url_error"[^>]*>([^<]*)</p>', html)
    assert error is not None and message in error.group(1)
    assert 'id="webhook-secret"' not in html
    with organization_schema(organization):
        assert not WebhookEndpoint.objects.exists()

    # The same refusal when changing an endpoint; the endpoint is left as it was.
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = True
    endpoint = endpoint_make(organization)
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = private_allowed
    edit = client.post(f"/webhooks/{endpoint.pk}/edit/", {"url": url, "events": ["*"], "is_active": "on"})
    assert edit.status_code == 400 and b'id="id_url_error"' in edit.content
    with organization_schema(organization):
        endpoint.refresh_from_db()
        assert endpoint.url == URL and endpoint.events == ["job.*"]


def test_events_are_required_and_only_from_the_catalogue(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, "developer")
    for events in ([], ["job.nope"]):
        refused = client.post("/webhooks/", {"url": URL, "events": events, "description": "x" * 10})
        assert refused.status_code == 400 and b'id="id_events_error"' in refused.content
    too_long = client.post("/webhooks/", {"url": URL, "events": ["*"], "description": "x" * 501})
    assert too_long.status_code == 400 and b"at most 500 characters" in too_long.content
    with organization_schema(organization):
        assert not WebhookEndpoint.objects.exists()


def test_the_secret_is_shown_once_and_never_again(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, "owner")
    form = client.get("/webhooks/").content.decode()
    submission = re.search(r'name="submission" value="([^"]+)"', form)
    assert submission is not None
    data = {"url": URL, "events": ["job.*"], "submission": submission.group(1)}
    created = client.post("/webhooks/", data)
    html = created.content.decode()
    secret = shown_secret(html)
    assert "shown only once" in html and "Copy secret" in html
    assert secret not in html.replace(f'value="{secret}"', "")  # not in the verification snippet
    with organization_schema(organization):
        endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret_hint == secret[-4:]

    # A reload of the answer (or a double click) makes no second endpoint and shows no secret.
    again = client.post("/webhooks/", data)
    assert (
        again.status_code == 400
        and b"already sent" in again.content
        and b"whsec_" not in again.content.replace(b"whsec_\xe2\x80\xa6", b"")
    )
    with organization_schema(organization):
        assert WebhookEndpoint.objects.count() == 1

    # Never again: not in the pages, not in the session, not in the audit rows.
    for path in ("/webhooks/", f"/webhooks/{endpoint.pk}/", f"/webhooks/{endpoint.pk}/edit/", "/audit/"):
        later = client.get(path)
        assert later.status_code == 200, path
        assert secret not in later.content.decode() and not SECRET.search(later.content.decode()), path
    assert f"…{endpoint.secret_hint}" in client.get(f"/webhooks/{endpoint.pk}/").content.decode()
    assert secret not in str(dict(client.session.items()))
    with organization_schema(organization):
        audit_rows = list(AuditEvent.objects.values_list("metadata", flat=True))
    assert audit_rows and not any(secret in str(row) for row in audit_rows)

    # Rotation: a new secret in that answer only; the old one signs too for the grace period.
    page = client.get(f"/webhooks/{endpoint.pk}/").content.decode()
    assert "grace period" in page and "two <code>v1=</code> signatures" in page
    rotation = re.search(r'name="submission" value="([^"]+)"', page)
    assert rotation is not None
    rotated = client.post(
        f"/webhooks/{endpoint.pk}/rotate/", {"grace_period_seconds": "3600", "submission": rotation.group(1)}
    )
    assert rotated.status_code == 200
    rotated_html = rotated.content.decode()
    new_secret = shown_secret(rotated_html)
    assert new_secret != secret and "The old secret keeps signing too until" in rotated_html
    with organization_schema(organization):
        endpoint.refresh_from_db()
        assert webhook_endpoint_secrets(organization=organization, endpoint=endpoint) == [new_secret, secret]
        audit_rows = list(AuditEvent.objects.values_list("metadata", flat=True))
    assert not any(new_secret in str(row) or secret in str(row) for row in audit_rows)
    assert any(row.get("grace_period_seconds") == 3600 for row in audit_rows)
    after_rotation = client.get(f"/webhooks/{endpoint.pk}/").content.decode()
    assert new_secret not in after_rotation and "The previous secret still signs too" in after_rotation
    resent = client.post(
        f"/webhooks/{endpoint.pk}/rotate/", {"grace_period_seconds": "3600", "submission": rotation.group(1)}
    )
    assert resent.status_code == 400 and new_secret.encode() not in resent.content

    # No grace: only the newest secret signs; a grace period out of bounds is refused.
    ended = client.post(f"/webhooks/{endpoint.pk}/rotate/", {"grace_period_seconds": "0"})
    newest = shown_secret(ended.content.decode())
    assert b"The old secret no longer signs" in ended.content
    with organization_schema(organization):
        endpoint.refresh_from_db()
        assert webhook_endpoint_secrets(organization=organization, endpoint=endpoint) == [newest]
    refused = client.post(f"/webhooks/{endpoint.pk}/rotate/", {"grace_period_seconds": str(8 * 24 * 3600)})
    assert refused.status_code == 400 and b"whsec_" not in refused.content


def test_a_test_event_makes_a_delivery_whose_outcome_the_page_follows(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, user = signed_in(client_for, organization, "developer")
    with http_receiver() as receiver:
        created = client.post("/webhooks/", {"url": receiver.url, "events": ["job.succeeded"]})
        receiver.secret = shown_secret(created.content.decode())
        with organization_schema(organization):
            endpoint = WebhookEndpoint.objects.get()
        page = client.get(f"/webhooks/{endpoint.pk}/").content.decode()
        assert "Send test event" in page and f'hx-post="/webhooks/{endpoint.pk}/test/"' in page
        assert str(endpoint.pk) in page and "CognitionOS-Signature" in page  # how to verify, with the id

        sent = client.post(f"/webhooks/{endpoint.pk}/test/", HTTP_HX_REQUEST="true")
        assert sent.status_code == 200
        fragment = sent.content.decode()
        with organization_schema(organization):
            delivery = WebhookDelivery.objects.get()
        assert delivery.event_type == "webhook.test" and delivery.payload["sent_by"] == user.email
        assert "Pending" in fragment and 'hx-trigger="every 1s"' in fragment  # polls while unfinished
        assert f"/webhooks/deliveries/{delivery.pk}/live/" in fragment
        log = client.get(f"/webhooks/{endpoint.pk}/").content.decode()
        assert f'hx-get="/webhooks/{endpoint.pk}/deliveries/live/"' in log  # the log polls while it's pending

        assert webhook_delivery_attempt(organization=organization, delivery_id=delivery.pk) == "succeeded"
    [request] = receiver.received
    assert request.signature_ok is True and request.headers["CognitionOS-Event"] == "webhook.test"

    live = client.get(f"/webhooks/deliveries/{delivery.pk}/live/").content.decode()
    assert "Succeeded" in live and "hx-trigger" not in live and "<code>200</code>" in live  # polling stops
    rows = client.get(f"/webhooks/{endpoint.pk}/deliveries/live/").content.decode()
    assert rows.startswith('<tbody id="delivery-rows">') and "Succeeded" in rows and "hx-trigger" not in rows
    detail = client.get(f"/webhooks/deliveries/{delivery.pk}/").content.decode()
    assert "A test event from CognitionOS." in detail and "ok" in detail  # payload and response excerpt
    assert "Retry" not in detail  # a succeeded delivery has nothing to retry
    log = client.get(f"/webhooks/{endpoint.pk}/").content.decode()
    assert f'href="/webhooks/deliveries/{delivery.pk}/"' in log and "webhook.test" in log

    # Without script the form leads to the delivery's page.
    plain = client.post(f"/webhooks/{endpoint.pk}/test/")
    assert plain.status_code == 302 and plain["Location"].startswith("/webhooks/deliveries/")

    # A disabled endpoint gets no test event, even when posted by hand.
    client.post(f"/webhooks/{endpoint.pk}/edit/", {"url": endpoint.url, "events": ["*"]})
    refused = client.post(f"/webhooks/{endpoint.pk}/test/", HTTP_HX_REQUEST="true")
    assert b"endpoint is disabled" in refused.content
    with organization_schema(organization):
        assert WebhookDelivery.objects.count() == 2


def test_a_failed_delivery_is_retried_from_its_page(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, settings: Any
) -> None:
    organization = two_tenants[0]
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    client, user = signed_in(client_for, organization, "admin")
    with http_receiver(statuses=[500, 200]) as receiver:
        endpoint = endpoint_make(organization, url=receiver.url)
        with organization_schema(organization):
            [delivery] = webhook_event_emit(
                organization=organization, event_type="job.succeeded", payload={"job": {"id": "j-1"}}
            )
        assert webhook_delivery_attempt(organization=organization, delivery_id=delivery.pk) == "failed"

        page = client.get(f"/webhooks/deliveries/{delivery.pk}/").content.decode()
        assert "Failed" in page and "HTTP 500" in page and "<code>500</code>" in page
        assert '<button type="submit" class="button button--primary">Retry</button>' in page
        log = client.get(f"/webhooks/{endpoint.pk}/?status=failed").content.decode()
        assert f"delivery-{delivery.pk}" in log and "HTTP 500" in log
        succeeded = client.get(f"/webhooks/{endpoint.pk}/?status=succeeded").content.decode()
        assert f"delivery-{delivery.pk}" not in succeeded

        retried = client.post(f"/webhooks/deliveries/{delivery.pk}/retry/")
        assert retried.status_code == 302
        with organization_schema(organization):
            again = WebhookDelivery.objects.get(redelivery_of=delivery)
            assert again.event_id == delivery.event_id
            assert AuditEvent.objects.filter(action="webhook_delivery.retried", actor_label=user.email).exists()
        assert retried["Location"] == f"/webhooks/deliveries/{again.pk}/"
        assert webhook_delivery_attempt(organization=organization, delivery_id=again.pk) == "succeeded"
    followed = client.get(retried["Location"]).content.decode()
    assert "Succeeded" in followed and "an earlier delivery" in followed
    assert client.get(f"/webhooks/deliveries/{delivery.pk}/retry/").status_code in (403, 405)

    # A disabled endpoint's failed delivery is not offered for retry, and refused when posted anyway.
    with organization_schema(organization):
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(is_active=False)
    page = client.get(f"/webhooks/deliveries/{delivery.pk}/").content.decode()
    assert "The endpoint is disabled" in page and ">Retry<" not in page
    refused = client.post(f"/webhooks/deliveries/{delivery.pk}/retry/", follow=True)
    assert b"Not sent again: the endpoint is disabled" in refused.content
    with organization_schema(organization):
        assert WebhookDelivery.objects.count() == 2


def test_removed_content_is_said_not_shown(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, "owner")
    endpoint_make(organization)
    with organization_schema(organization):
        [delivery] = webhook_event_emit(
            organization=organization, event_type="job.succeeded", payload={"job": {"id": "j-9", "output": "hush"}}
        )
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            content_deleted_at=timezone.now(), payload={"job": {"id": "j-9", "output": None}, "content_removed": True}
        )
    html = client.get(f"/webhooks/deliveries/{delivery.pk}/").content.decode()
    assert "was not kept" in html and "j-9" in html and "hush" not in html


def test_another_organizations_endpoints_and_deliveries_are_not_found(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization_a, organization_b = two_tenants
    endpoint = endpoint_make(organization_a, url="http://127.0.0.1:9/hooks/of-a")
    with organization_schema(organization_a):
        [delivery] = webhook_event_emit(organization=organization_a, event_type="job.failed", payload={})
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=WorkStatus.FAILED, attempts=1, finished_at=timezone.now()
        )
    client_b, _ = signed_in(client_for, organization_b, "owner")
    assert b"of-a" not in client_b.get("/webhooks/").content
    for path in (
        f"/webhooks/{endpoint.pk}/",
        f"/webhooks/{endpoint.pk}/edit/",
        f"/webhooks/{endpoint.pk}/delete/",
        f"/webhooks/deliveries/{delivery.pk}/",
        f"/webhooks/deliveries/{delivery.pk}/live/",
        f"/webhooks/{endpoint.pk}/deliveries/live/",
    ):
        assert client_b.get(path).status_code == 404, path
    for path in (
        f"/webhooks/{endpoint.pk}/edit/",
        f"/webhooks/{endpoint.pk}/delete/",
        f"/webhooks/{endpoint.pk}/rotate/",
        f"/webhooks/{endpoint.pk}/test/",
        f"/webhooks/deliveries/{delivery.pk}/retry/",
    ):
        assert client_b.post(path, {"url": URL, "events": ["*"], "grace_period_seconds": "0"}).status_code == 404
    with organization_schema(organization_a):
        assert WebhookEndpoint.objects.filter(pk=endpoint.pk, url__endswith="/of-a").exists()
        assert WebhookDelivery.objects.count() == 1
    # A member of B is no one on A's host.
    client_b_on_a = client_for(f"{organization_a.slug}.localhost")
    client_b_on_a.force_login(User.objects.get(pk=client_b.session["_auth_user_id"]))
    assert client_b_on_a.get("/webhooks/").status_code == 403
    assert client_b_on_a.get(f"/webhooks/{endpoint.pk}/").status_code == 403


@pytest.mark.parametrize("role", ["viewer", "billing"])
def test_roles_without_webhooks_manage_neither_see_nor_use_the_pages(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, role: str
) -> None:
    organization = two_tenants[0]
    endpoint = endpoint_make(organization)
    with organization_schema(organization):
        [delivery] = webhook_event_emit(organization=organization, event_type="job.failed", payload={})
    client, _ = signed_in(client_for, organization, role)
    home = client.get("/").content.decode()
    assert 'href="/webhooks/"' not in home
    for path in (
        "/webhooks/",
        f"/webhooks/{endpoint.pk}/",
        f"/webhooks/{endpoint.pk}/edit/",
        f"/webhooks/{endpoint.pk}/delete/",
        f"/webhooks/deliveries/{delivery.pk}/",
        f"/webhooks/deliveries/{delivery.pk}/live/",
        f"/webhooks/{endpoint.pk}/deliveries/live/",
    ):
        assert client.get(path).status_code == 403, path
    for path in (
        "/webhooks/",
        f"/webhooks/{endpoint.pk}/edit/",
        f"/webhooks/{endpoint.pk}/delete/",
        f"/webhooks/{endpoint.pk}/rotate/",
        f"/webhooks/{endpoint.pk}/test/",
        f"/webhooks/deliveries/{delivery.pk}/retry/",
    ):
        assert client.post(path, {"url": URL, "events": ["*"]}).status_code == 403, path
    with organization_schema(organization):
        assert WebhookEndpoint.objects.count() == 1 and WebhookDelivery.objects.count() == 1


@pytest.mark.parametrize("role", ["owner", "admin", "developer"])
def test_roles_with_webhooks_manage_are_offered_the_page(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, role: str
) -> None:
    client, _ = signed_in(client_for, two_tenants[0], role)
    assert b'href="/webhooks/"' in client.get("/").content
    assert client.get("/webhooks/").status_code == 200


def test_signed_out_is_sent_to_sign_in(two_tenants: tuple[Organization, Organization], client_for: ClientFor) -> None:
    answer = client_for(f"{two_tenants[0].slug}.localhost").get("/webhooks/")
    assert answer.status_code == 302 and "/accounts/login/" in answer["Location"]


def test_the_delivery_log_pages_by_keyset_with_queries_constant_in_its_length(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, "developer")
    endpoint = endpoint_make(organization)

    def emit(count: int) -> None:
        with organization_schema(organization):
            for number in range(count):
                webhook_event_emit(organization=organization, event_type="job.succeeded", payload={"n": number})

    def counted(path: str) -> tuple[int, str]:
        connection.queries_log.clear()
        with CaptureQueriesContext(connection) as queries:
            answer = client.get(path)
        assert answer.status_code == 200
        return len(queries), answer.content.decode()

    emit(3)
    page_path = f"/webhooks/{endpoint.pk}/"
    client.get(page_path)  # warm per-process caches
    few, _ = counted(page_path)
    emit(40)
    with organization_schema(organization):
        oldest = WebhookDelivery.objects.order_by("created_at", "id").first()
        assert oldest is not None
        WebhookDelivery.objects.filter(pk=oldest.pk).update(
            status=WorkStatus.FAILED, attempts=8, finished_at=timezone.now(), error_message="HTTP 502"
        )
    many, html = counted(page_path)
    assert many == few
    assert html.count('<tr id="delivery-') == 25 and html.count('hx-trigger="every 2s"') == 1  # one poll per page
    next_link = re.search(r'href="\?(before=[^"#]+)#deliveries-heading"', html)
    assert next_link is not None
    second_count, second = counted(f"{page_path}?{next_link.group(1)}")
    assert second_count <= few + 1
    assert second.count('<tr id="delivery-') == 18 and "HTTP 502" in second and "Newer deliveries" in second
    assert second.count(">Retry<") == 1  # the failed one, in its row
    # The live fragment asks for the same page again, in one query for the rows.
    live_path = re.search(r'hx-get="(/webhooks/[^"]+/deliveries/live/\?[^"]+)"', second)
    assert live_path is not None and "before=" in live_path.group(1)
    live_count, live = counted(live_path.group(1).replace("&amp;", "&"))
    assert live_count < few and live.count('<tr id="delivery-') == 18
    shown = set(re.findall(r'<tr id="delivery-([0-9a-f-]+)"', html)) | set(
        re.findall(r'<tr id="delivery-([0-9a-f-]+)"', second)
    )
    with organization_schema(organization):
        assert shown == {str(pk) for pk in WebhookDelivery.objects.values_list("pk", flat=True)}
    back = re.search(r'href="\?(after=[^"#]+)#deliveries-heading"', second)
    assert back is not None
    _, newer = counted(f"{page_path}?{back.group(1)}")
    assert re.findall(r'<tr id="delivery-([0-9a-f-]+)"', newer) == re.findall(r'<tr id="delivery-([0-9a-f-]+)"', html)
    # A cursor that isn't one is ignored (the first page), never an error.
    for junk in ("before=1_x", "before=99999999999999999999_" + uuid.uuid4().hex, "after=-1_" + "0" * 32):
        assert client.get(f"{page_path}?{junk}").status_code == 200


def test_the_endpoints_are_paged_newest_first(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks_pages, "ENDPOINTS_PAGE_SIZE", 2)
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, "owner")
    for number in range(3):
        endpoint_make(organization, url=f"http://127.0.0.1:9/hooks/number-{number}")
    first = client.get("/webhooks/").content.decode()
    assert "number-2" in first and "number-1" in first and "number-0" not in first
    older = re.search(r'href="\?(before=[^"#]+)#endpoints-heading"', first)
    assert older is not None and "Older endpoints" in first
    second = client.get(f"/webhooks/?{older.group(1)}").content.decode()
    assert "number-0" in second and "number-1" not in second and "Newest endpoints" in second
