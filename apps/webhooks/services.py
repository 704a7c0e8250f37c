"""Every write of outgoing webhooks: endpoints, secrets, events, deliveries and their attempts.

Other apps emit events with `webhook_event_emit(organization=, event_type=, payload=, endpoint_id=)`.
Deliveries are durable work of the runtime (apps.work, kind `DELIVERY`): it claims, heartbeats,
retries on the deliveries' schedule, reaps and sweeps their content.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets as secrets_module
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.accounts.principals import Principal
from apps.audit.services import audit_record
from apps.billing.selectors import entitlement_require
from apps.llm.calls import llm_content_policy
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from apps.webhooks.events import EventsInvalid, events_normalize
from apps.webhooks.metrics import webhook_attempt_record
from apps.webhooks.models import WebhookDelivery, WebhookEndpoint
from apps.webhooks.selectors import webhook_endpoints_receiving
from apps.webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, webhook_signature_header
from apps.work.models import WorkStatus
from apps.work.policy import TransientFailure
from apps.work.principals import principal_fields
from apps.work.registry import RetrySchedule, WorkKind
from apps.work.services import work_execute, work_fail, work_finish, work_send
from cognitionos.refusals import Refusal
from cognitionos.safehttp import OutboundError, OutboundRefused, outbound_request, outbound_url_check
from cognitionos.sealing import Sealed, current_key_id, seal, unseal

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
MAX_GRACE_SECONDS = 7 * 24 * 3600
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
RESPONSE_READ_BYTES = 64 * 1024
USER_AGENT = "CognitionOS-Webhooks/1"


class WebhookInvalid(Refusal, ValueError):
    """A refused input; `param` names the field at fault."""

    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class WebhookConflict(Refusal):
    """The operation does not apply in the object's current state; `code` says why."""

    http_status = 409

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


# --- secrets ---------------------------------------------------------------------------------


def _secret_context(organization: Organization, endpoint_id: uuid.UUID) -> str:
    return f"{organization.schema_name}:webhook:{endpoint_id}"


def _secret_new() -> str:
    return SECRET_PREFIX + secrets_module.token_urlsafe(32)


def webhook_endpoint_secrets(*, organization: Organization, endpoint: WebhookEndpoint) -> list[str]:
    """The secrets that sign for `endpoint` now: the current one, then a rotated one still in grace."""
    context = _secret_context(organization, endpoint.pk)
    result = [
        unseal(
            Sealed(endpoint.secret_key_id, bytes(endpoint.secret_nonce), bytes(endpoint.secret_ciphertext)),
            context=context,
        )
    ]
    if (
        endpoint.previous_secret_ciphertext is not None
        and endpoint.previous_secret_nonce is not None
        and endpoint.previous_secret_expires_at is not None
        and endpoint.previous_secret_expires_at > timezone.now()
    ):
        result.append(
            unseal(
                Sealed(
                    endpoint.previous_secret_key_id,
                    bytes(endpoint.previous_secret_nonce),
                    bytes(endpoint.previous_secret_ciphertext),
                ),
                context=context,
            )
        )
    return result


def _seal_into(endpoint: WebhookEndpoint, *, organization: Organization, secret: str) -> None:
    sealed = seal(secret, context=_secret_context(organization, endpoint.pk))
    endpoint.secret_key_id, endpoint.secret_nonce, endpoint.secret_ciphertext = (
        sealed.key_id,
        sealed.nonce,
        sealed.ciphertext,
    )
    endpoint.secret_hint = secret[-4:]


# --- endpoints -------------------------------------------------------------------------------


def webhook_url_validate(url: str) -> str:
    """The URL, stripped, if webhooks may be sent to it now (http or https, a public address unless
    OUTBOUND_ALLOW_PRIVATE_NETWORKS); raises WebhookInvalid otherwise. Resolves the host name."""
    url = url.strip()
    if len(url) > 2000:
        raise WebhookInvalid("the URL is longer than 2000 characters", param="url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise WebhookInvalid("the URL must start with https:// (or http://)", param="url")
    if not parts.hostname:
        raise WebhookInvalid("the URL has no host", param="url")
    if parts.username is not None or parts.password is not None:
        raise WebhookInvalid("put credentials in the path or query, not before the host", param="url")
    if parts.fragment:
        raise WebhookInvalid("the URL must not have a #fragment", param="url")
    try:
        outbound_url_check(url)
    except OutboundRefused as exc:
        raise WebhookInvalid(f"webhooks can't be sent to this URL: {exc}", param="url") from exc
    return url


def _events(events: object) -> list[str]:
    if not isinstance(events, list | tuple):
        raise WebhookInvalid("events must be a list of event types", param="events")
    try:
        return events_normalize(events)
    except EventsInvalid as exc:
        raise WebhookInvalid(str(exc), param="events") from exc


def _audit_metadata(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {"host": urlsplit(endpoint.url).hostname, "events": endpoint.events, "active": endpoint.is_active}


def webhook_endpoint_create(
    *, organization: Organization, actor: Principal, url: str, events: list[str], description: str = ""
) -> tuple[WebhookEndpoint, str]:
    """Make an endpoint; returns it with its signing secret, which is never shown again."""
    entitlement_require(organization, "webhooks")
    url = webhook_url_validate(url)  # resolves the name: before any transaction
    subscribed = _events(events)
    secret = _secret_new()
    endpoint = WebhookEndpoint(
        url=url, events=subscribed, description=description.strip(), created_by_label=actor.label
    )
    _seal_into(endpoint, organization=organization, secret=secret)
    with organization_schema(organization), transaction.atomic():
        endpoint.save()
        audit_record(
            organization=organization,
            actor=actor,
            action="webhook_endpoint.created",
            target=endpoint,
            metadata=_audit_metadata(endpoint),
        )
    return endpoint, secret


def webhook_endpoint_update(
    *,
    organization: Organization,
    actor: Principal,
    endpoint_id: uuid.UUID,
    url: str | None = None,
    events: list[str] | None = None,
    description: str | None = None,
    is_active: bool | None = None,
) -> WebhookEndpoint:
    """Change the given fields (None: unchanged). Raises WebhookEndpoint.DoesNotExist."""
    checked_url = webhook_url_validate(url) if url is not None else None
    subscribed = _events(events) if events is not None else None
    with organization_schema(organization), transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
        before = _audit_metadata(endpoint)
        changed: list[str] = []
        if checked_url is not None and checked_url != endpoint.url:
            endpoint.url = checked_url
            changed.append("url")
        if subscribed is not None and subscribed != endpoint.events:
            endpoint.events = subscribed
            changed.append("events")
        if description is not None and description.strip() != endpoint.description:
            endpoint.description = description.strip()
            changed.append("description")
        if is_active is not None and is_active != endpoint.is_active:
            endpoint.is_active = is_active
            changed.append("is_active")
        if changed:
            endpoint.save(update_fields=[*changed, "updated_at"])
            audit_record(
                organization=organization,
                actor=actor,
                action="webhook_endpoint.updated",
                target=endpoint,
                metadata={"changed": changed, "before": before, "after": _audit_metadata(endpoint)},
            )
    return endpoint


def webhook_endpoint_delete(*, organization: Organization, actor: Principal, endpoint_id: uuid.UUID) -> None:
    """Delete an endpoint and its delivery log; scheduled deliveries are dropped."""
    with organization_schema(organization), transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
        audit_record(
            organization=organization,
            actor=actor,
            action="webhook_endpoint.deleted",
            target=endpoint,
            metadata=_audit_metadata(endpoint),
        )
        endpoint.delete()


def webhook_secret_rotate(
    *, organization: Organization, actor: Principal, endpoint_id: uuid.UUID, grace_s: int = 24 * 3600
) -> tuple[WebhookEndpoint, str]:
    """A new signing secret, returned once. For `grace_s` seconds the old one signs too (a second
    `v1=` in the signature header), so receivers can switch without dropping events; 0 ends it now."""
    if not 0 <= grace_s <= MAX_GRACE_SECONDS:
        raise WebhookInvalid(f"the grace period is 0 to {MAX_GRACE_SECONDS} seconds", param="grace_period_seconds")
    secret = _secret_new()
    with organization_schema(organization), transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
        if grace_s > 0:
            endpoint.previous_secret_key_id = endpoint.secret_key_id
            endpoint.previous_secret_nonce = bytes(endpoint.secret_nonce)
            endpoint.previous_secret_ciphertext = bytes(endpoint.secret_ciphertext)
            endpoint.previous_secret_expires_at = timezone.now() + dt.timedelta(seconds=grace_s)
        else:
            endpoint.previous_secret_key_id = ""
            endpoint.previous_secret_nonce = None
            endpoint.previous_secret_ciphertext = None
            endpoint.previous_secret_expires_at = None
        _seal_into(endpoint, organization=organization, secret=secret)
        endpoint.save()
        audit_record(
            organization=organization,
            actor=actor,
            action="webhook_endpoint.secret_rotated",
            target=endpoint,
            metadata={"grace_period_seconds": grace_s, "hint": endpoint.secret_hint},
        )
    return endpoint, secret


def webhook_secrets_reencrypt(*, organization: Organization) -> int:
    """Re-encrypt the organization's webhook secrets under the current CREDENTIALS_ENCRYPTION_KEYS
    key (after adding a key). Returns how many endpoints changed."""
    changed = 0
    key_id = current_key_id()
    with organization_schema(organization), transaction.atomic():
        stale = WebhookEndpoint.objects.select_for_update().filter(
            ~Q(secret_key_id=key_id) | (~Q(previous_secret_key_id=key_id) & Q(previous_secret_ciphertext__isnull=False))
        )
        for endpoint in stale:
            context = _secret_context(organization, endpoint.pk)
            current = unseal(
                Sealed(endpoint.secret_key_id, bytes(endpoint.secret_nonce), bytes(endpoint.secret_ciphertext)),
                context=context,
            )
            _seal_into(endpoint, organization=organization, secret=current)
            if endpoint.previous_secret_ciphertext is not None and endpoint.previous_secret_nonce is not None:
                previous = unseal(
                    Sealed(
                        endpoint.previous_secret_key_id,
                        bytes(endpoint.previous_secret_nonce),
                        bytes(endpoint.previous_secret_ciphertext),
                    ),
                    context=context,
                )
                sealed = seal(previous, context=context)
                endpoint.previous_secret_key_id = sealed.key_id
                endpoint.previous_secret_nonce = sealed.nonce
                endpoint.previous_secret_ciphertext = sealed.ciphertext
            endpoint.save()
            changed += 1
    return changed


# --- content ---------------------------------------------------------------------------------

# Where events carry what the organization's users wrote or got back: prompts, answers, run inputs
# and outputs. Everything else in a payload (ids, status, counts, costs, error classes) is metadata.
CONTENT_KEYS = frozenset({"input", "output", "text", "tool_calls", "messages", "prompt", "content", "items"})


def webhook_payload_without_content(payload: Any) -> Any:
    """The payload with every content field, at any depth, set to null (the keys stay, so a
    receiver sees the same shape), marked `content_removed` at the top."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: None if key in CONTENT_KEYS else strip(item) for key, item in value.items()}
        if isinstance(value, list):
            return [strip(item) for item in value]
        return value

    stripped = strip(payload)
    if isinstance(stripped, dict):
        stripped["content_removed"] = True
    return stripped


def _stores_content(organization: Organization) -> bool:
    return llm_content_policy(organization=organization).store_content


# --- events and deliveries -------------------------------------------------------------------


def _send(organization: Organization, ids: list[uuid.UUID]) -> None:
    transaction.on_commit(lambda: work_send(organization=organization, kind=DELIVERY, ids=ids))


# Deliveries nobody in particular asked for: an event of the organization's work.
EVENT_PRINCIPAL = Principal(kind="system", id=None, label="webhook events")


def webhook_event_emit(
    *,
    organization: Organization,
    event_type: str,
    payload: dict[str, Any],
    endpoint_id: uuid.UUID | None = None,
) -> list[WebhookDelivery]:
    """Record one delivery of the event per active endpoint subscribed to `event_type` (or, with
    `endpoint_id`, to that endpoint only, whatever it subscribed to; nothing if it is gone or
    disabled), and send them once the caller's transaction commits. All deliveries of one call
    share the event id. The payload must be JSON-serialisable (Decimal, UUID, datetimes allowed).
    In no-content mode its content fields are removed before anything is stored or sent."""
    with organization_schema(organization):
        endpoints = webhook_endpoints_receiving(event_type=event_type, endpoint_id=endpoint_id)
    if not endpoints:
        return []  # most events of most organizations: nothing to encode, store or send
    stores_content = _stores_content(organization)
    if not stores_content:
        payload = webhook_payload_without_content(payload)
    encoded = json.dumps(payload, cls=DjangoJSONEncoder)
    if len(encoded) > MAX_PAYLOAD_BYTES:
        raise WebhookInvalid(f"the event payload is larger than {MAX_PAYLOAD_BYTES} bytes", param="payload")
    # No savepoint of its own: inside a caller's transaction (a job's end) it succeeds or fails with it.
    with organization_schema(organization), transaction.atomic(savepoint=False):
        event_id = uuid.uuid4()
        now = timezone.now()
        deliveries = WebhookDelivery.objects.bulk_create(
            [
                WebhookDelivery(
                    endpoint_id=endpoint,
                    event_type=event_type,
                    event_id=event_id,
                    payload=json.loads(encoded),
                    # Sent on commit: admitted now (the reaper sends it again if no worker takes it).
                    admitted_at=now,
                    created_at=now,
                    content_deleted_at=None if stores_content else now,
                    **principal_fields(EVENT_PRINCIPAL),
                )
                for endpoint in endpoints
            ]
        )
        _send(organization, [delivery.pk for delivery in deliveries])
    return deliveries


def webhook_endpoint_test(*, organization: Organization, actor: Principal, endpoint_id: uuid.UUID) -> WebhookDelivery:
    """Send a `webhook.test` event to one endpoint (whatever it subscribed to). Raises
    WebhookEndpoint.DoesNotExist, or WebhookConflict if the endpoint is disabled."""
    with organization_schema(organization), transaction.atomic():
        endpoint = WebhookEndpoint.objects.get(pk=endpoint_id)
        if not endpoint.is_active:
            raise WebhookConflict("the endpoint is disabled; enable it first", code="endpoint_disabled")
        [delivery] = webhook_event_emit(
            organization=organization,
            event_type="webhook.test",
            payload={
                "message": "A test event from CognitionOS.",
                "endpoint_id": str(endpoint.pk),
                "sent_by": actor.label,
            },
            endpoint_id=endpoint.pk,
        )
    return delivery


def webhook_delivery_retry(*, organization: Organization, actor: Principal, delivery_id: uuid.UUID) -> WebhookDelivery:
    """Send a delivery again now. A finished one (succeeded or failed) gets a new delivery of the
    same event (same event id) to the same endpoint; a waiting one has its next attempt moved to
    now. Raises WebhookConflict if the endpoint is disabled or an attempt is in flight."""
    now = timezone.now()
    with organization_schema(organization), transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(of=("self",)).select_related("endpoint").get(pk=delivery_id)
        )
        if not delivery.endpoint.is_active:
            raise WebhookConflict("the endpoint is disabled; enable it first", code="endpoint_disabled")
        if delivery.status == WorkStatus.RUNNING:
            alive_after = now - dt.timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_SECONDS)
            if delivery.heartbeat_at is not None and delivery.heartbeat_at >= alive_after:
                raise WebhookConflict("an attempt of this delivery is in progress", code="delivery_in_progress")
            target = delivery  # its worker died: the claim takes it over
        elif delivery.status == WorkStatus.QUEUED:
            delivery.next_attempt_at = None
            delivery.admitted_at = now
            delivery.save(update_fields=["next_attempt_at", "admitted_at"])
            target = delivery
        else:
            content_deleted_at = delivery.content_deleted_at
            if content_deleted_at is None and not _stores_content(organization):
                content_deleted_at = now
            target = WebhookDelivery.objects.create(
                endpoint=delivery.endpoint,
                event_type=delivery.event_type,
                event_id=delivery.event_id,
                payload=delivery.payload
                if content_deleted_at is None
                else webhook_payload_without_content(delivery.payload),
                admitted_at=now,
                redelivery_of=delivery,
                content_deleted_at=content_deleted_at,
                **principal_fields(actor),
            )
        audit_record(
            organization=organization,
            actor=actor,
            action="webhook_delivery.retried",
            target=target,
            metadata={
                "delivery": str(delivery.pk),
                "event_type": delivery.event_type,
                "endpoint": str(delivery.endpoint_id),
            },
        )
        _send(organization, [target.pk])
    return target


# --- one attempt (run by apps.work: claimed, numbered, heartbeating) ---------------------------


def webhook_delivery_body(*, organization: Organization, delivery: WebhookDelivery) -> bytes:
    """The JSON body POSTed for a delivery (the same bytes on every attempt, unless the organization
    turned content off or the retention removed it meanwhile: then without the content)."""
    payload = delivery.payload
    if delivery.content_deleted_at is None and not _stores_content(organization):
        payload = webhook_payload_without_content(payload)
    envelope = {
        "id": str(delivery.event_id),
        "type": delivery.event_type,
        "created_at": delivery.created_at.isoformat().replace("+00:00", "Z"),
        "organization": organization.slug,
        "data": payload,
    }
    return json.dumps(envelope, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False).encode()


def _retry_after_s(value: str | None) -> float | None:
    return float(value) if value is not None and value.strip().isdigit() else None


def _delivery_send(organization: Organization, delivery: WebhookDelivery) -> None:
    """One attempt (the claimed run, `delivery.attempts` its number): POST the signed event and
    record the answer. A 2xx ends the delivery; anything else (another status, a redirect, a
    timeout, a refused address) is a transient failure the runtime retries on the deliveries'
    schedule until the attempts are spent."""
    endpoint = WebhookEndpoint.objects.get(pk=delivery.endpoint_id)
    if not endpoint.is_active:
        work_fail(
            organization=organization,
            kind=DELIVERY,
            item=delivery,
            error_class="endpoint_disabled",
            message="not sent: the endpoint is disabled",
        )
        return
    body = webhook_delivery_body(organization=organization, delivery=delivery)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: delivery.event_type,
        DELIVERY_HEADER: str(delivery.pk),
        "CognitionOS-Event-Id": str(delivery.event_id),
        "CognitionOS-Attempt": str(delivery.attempts),
        SIGNATURE_HEADER: webhook_signature_header(
            webhook_endpoint_secrets(organization=organization, endpoint=endpoint), body
        ),
    }
    # Nothing is held open during the request: the claim committed, the heartbeat has its own connection.
    started_at, started = timezone.now(), time.monotonic()
    values: dict[str, Any] = {"last_attempt_at": started_at, "last_response_status": None, "last_response_excerpt": ""}
    retry_after: float | None = None
    try:
        response = outbound_request(
            method="POST",
            url=endpoint.url,
            headers=headers,
            content=body,
            timeout_s=settings.WEBHOOK_TIMEOUT_SECONDS,
            max_response_bytes=RESPONSE_READ_BYTES,
        )
        values.update(last_response_status=response.status_code, last_response_excerpt=response.text(512)[:512])
        retry_after = _retry_after_s(response.headers.get("Retry-After"))
        error_class = "" if response.is_success else "http_error"
        message = (
            ""
            if response.is_success
            else f"HTTP {response.status_code}"
            + (" (redirects are not followed)" if 300 <= response.status_code < 400 else "")
        )
    except OutboundRefused as exc:
        error_class, message = "refused", f"refused: {exc}"
    except OutboundError as exc:
        error_class, message = "unreachable", str(exc)
    elapsed = time.monotonic() - started
    values["last_duration_ms"] = int(elapsed * 1000)
    webhook_attempt_record(error_class=error_class, status_code=values["last_response_status"], seconds=elapsed)
    if error_class:
        raise TransientFailure(error_class, message[:1000], values=values, retry_after_s=retry_after)
    work_finish(
        organization=organization,
        kind=DELIVERY,
        item=delivery,
        status=WorkStatus.SUCCEEDED,
        values={**values, "error_class": "", "error_message": ""},
        attempt=delivery.attempts,
    )


def webhook_delivery_attempt(*, organization: Organization, delivery_id: uuid.UUID) -> str:
    """Run the due attempt of a delivery on this worker, as the runtime's `work_run` does, and say
    what happened: "skipped" (nothing sent: not due, finished, held by a live worker, its endpoint
    disabled, or out of attempts), "succeeded", "retrying" or "failed". Idempotent."""
    with organization_schema(organization):
        ran = work_execute(organization=organization, kind=DELIVERY, item_id=delivery_id)
        if ran is None:
            return "skipped"
        delivery = WebhookDelivery.objects.only("status", "attempts", "error_class").get(pk=delivery_id)
        if delivery.error_class == "endpoint_disabled":
            return "skipped"
        return str(delivery.delivery_status)


def _schedule() -> RetrySchedule:
    return RetrySchedule(
        max_attempts=lambda: int(settings.WEBHOOK_MAX_ATTEMPTS),
        delays_s=lambda: [float(delay) for delay in settings.WEBHOOK_RETRY_DELAYS_SECONDS],
        jitter=0.25,
    )


DELIVERY = WorkKind(
    name="webhook_delivery",
    model=WebhookDelivery,
    execute=_delivery_send,
    # The payload (what the event carried) and the receiver's answer, which may echo it.
    content_fields=(("payload", webhook_payload_without_content), ("last_response_excerpt", lambda _: "")),
    # Older than the retention, sent or not (a waiting delivery goes out without its content).
    retention_from="created_at",
    schedule=_schedule(),
)
