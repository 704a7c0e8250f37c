"""Every write of outgoing webhooks: endpoints, secrets, events, deliveries and their attempts.

Other apps emit events with `webhook_event_emit(organization=, event_type=, payload=, endpoint_id=)`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import secrets as secrets_module
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.accounts.principals import Principal
from apps.audit.services import audit_record
from apps.llm.calls import llm_content_policy
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from apps.webhooks.events import EventsInvalid, events_normalize, subscription_entries
from apps.webhooks.models import SCHEDULED, DeliveryStatus, WebhookDelivery, WebhookEndpoint
from apps.webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, webhook_signature_header
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


def webhook_deliveries_content_sweep(
    *, organization: Organization, now: dt.datetime | None = None, batch: int = 500
) -> int:
    """Remove the content of deliveries older than the organization's content retention (of every
    delivery in no-content mode): the payload keeps its ids, status, counts and costs, and the
    receiver's response excerpt (which may echo the payload) goes. Returns how many deliveries."""
    now = now or timezone.now()
    policy = llm_content_policy(organization=organization)
    cutoff = now if not policy.store_content else now - dt.timedelta(days=policy.retention_days)
    swept = 0
    with organization_schema(organization):
        while True:
            with transaction.atomic():
                rows = list(
                    WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
                    .filter(content_deleted_at=None, created_at__lt=cutoff)
                    .only("pk", "payload")[:batch]
                )
                if not rows:
                    return swept
                for row in rows:
                    row.payload = webhook_payload_without_content(row.payload)
                    row.last_response_excerpt = ""
                    row.content_deleted_at = now
                WebhookDelivery.objects.bulk_update(rows, ["payload", "last_response_excerpt", "content_deleted_at"])
                swept += len(rows)


# --- events and deliveries -------------------------------------------------------------------


def _send_tasks(organization_id: int, delivery_ids: list[uuid.UUID]) -> None:
    from apps.webhooks.tasks import webhook_deliver

    for delivery_id in delivery_ids:
        webhook_deliver.delay(tenant_id=organization_id, delivery_id=str(delivery_id))


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
    stores_content = _stores_content(organization)
    if not stores_content:
        payload = webhook_payload_without_content(payload)
    encoded = json.dumps(payload, cls=DjangoJSONEncoder)
    if len(encoded) > MAX_PAYLOAD_BYTES:
        raise WebhookInvalid(f"the event payload is larger than {MAX_PAYLOAD_BYTES} bytes", param="payload")
    # No savepoint of its own: inside a caller's transaction (a job's end) it succeeds or fails with it.
    with organization_schema(organization), transaction.atomic(savepoint=False):
        # Every job's end emits: one plain query for the active endpoints, matched here.
        active = WebhookEndpoint.objects.filter(is_active=True)
        if endpoint_id is not None:
            active = active.filter(pk=endpoint_id)
        entries = set(subscription_entries(event_type))
        endpoints = [
            pk for pk, events in active.values_list("pk", "events") if endpoint_id is not None or entries & set(events)
        ]
        event_id = uuid.uuid4()
        now = timezone.now()
        deliveries = WebhookDelivery.objects.bulk_create(
            [
                WebhookDelivery(
                    endpoint_id=endpoint,
                    event_type=event_type,
                    event_id=event_id,
                    payload=json.loads(encoded),
                    status=DeliveryStatus.PENDING,
                    next_attempt_at=now,
                    dispatched_at=now,
                    created_at=now,
                    content_deleted_at=None if stores_content else now,
                )
                for endpoint in endpoints
            ]
        )
        if deliveries:
            ids = [delivery.pk for delivery in deliveries]
            transaction.on_commit(lambda: _send_tasks(organization.pk, ids))
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
    same event (same event id) to the same endpoint; a scheduled one has its next attempt moved to
    now. Raises WebhookConflict if the endpoint is disabled or an attempt is in flight."""
    now = timezone.now()
    with organization_schema(organization), transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(of=("self",)).select_related("endpoint").get(pk=delivery_id)
        )
        if not delivery.endpoint.is_active:
            raise WebhookConflict("the endpoint is disabled; enable it first", code="endpoint_disabled")
        if delivery.status in SCHEDULED:
            if delivery.locked_until is not None and delivery.locked_until > now:
                raise WebhookConflict("an attempt of this delivery is in progress", code="delivery_in_progress")
            delivery.next_attempt_at = now
            delivery.dispatched_at = now
            delivery.save(update_fields=["next_attempt_at", "dispatched_at"])
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
                status=DeliveryStatus.PENDING,
                next_attempt_at=now,
                dispatched_at=now,
                redelivery_of=delivery,
                content_deleted_at=content_deleted_at,
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
        transaction.on_commit(lambda: _send_tasks(organization.pk, [target.pk]))
    return target


def webhook_deliveries_dispatch(*, organization: Organization, limit: int = 500) -> int:
    """Beat: send a task for each due attempt whose task was not sent recently. Returns how many."""
    now = timezone.now()
    resend_before = now - dt.timedelta(seconds=settings.WEBHOOK_REDISPATCH_SECONDS)
    with organization_schema(organization), transaction.atomic():
        ids = list(
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .filter(status__in=SCHEDULED, next_attempt_at__lte=now)
            .filter(Q(locked_until__isnull=True) | Q(locked_until__lte=now))
            .filter(Q(dispatched_at__isnull=True) | Q(dispatched_at__lte=resend_before))
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            WebhookDelivery.objects.filter(pk__in=ids).update(dispatched_at=now)
            transaction.on_commit(lambda: _send_tasks(organization.pk, ids))
    return len(ids)


# --- one attempt -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Claim:
    delivery: WebhookDelivery
    attempt: int
    secrets: list[str]


def _finish_without_sending(delivery: WebhookDelivery, reason: str) -> None:
    delivery.status = DeliveryStatus.FAILED
    delivery.next_attempt_at = None
    delivery.locked_until = None
    delivery.last_error = reason
    delivery.save(update_fields=["status", "next_attempt_at", "locked_until", "last_error"])


def _claim(*, organization: Organization, delivery_id: uuid.UUID) -> _Claim | None:
    """Take the delivery's due attempt, in a short transaction of its own: the row is skipped if
    another worker holds it, and then leased (`locked_until`) for the length of the request."""
    now = timezone.now()
    lease = dt.timedelta(seconds=3 * settings.WEBHOOK_TIMEOUT_SECONDS + 30)
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("endpoint")
            .filter(pk=delivery_id, status__in=SCHEDULED, next_attempt_at__lte=now)
            .filter(Q(locked_until__isnull=True) | Q(locked_until__lte=now))
            .first()
        )
        if delivery is None:
            return None
        if not delivery.endpoint.is_active:
            _finish_without_sending(delivery, "not sent: the endpoint is disabled")
            return None
        if delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
            # The last attempt's worker died before it could record the outcome.
            _finish_without_sending(delivery, delivery.last_error or "out of attempts")
            return None
        update_fields = ["attempts", "locked_until", "last_attempt_at"]
        if delivery.attempts > 0 and delivery.status == DeliveryStatus.PENDING:
            # The first attempt's worker stopped before it recorded an outcome: this is a retry.
            delivery.status = DeliveryStatus.RETRYING
            delivery.last_error = delivery.last_error or "the previous attempt did not report back"
            update_fields += ["status", "last_error"]
        delivery.attempts += 1
        delivery.locked_until = now + lease
        delivery.last_attempt_at = now
        delivery.save(update_fields=update_fields)
        return _Claim(
            delivery=delivery,
            attempt=delivery.attempts,
            secrets=webhook_endpoint_secrets(organization=organization, endpoint=delivery.endpoint),
        )


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


def _retry_delay_s(attempt: int, retry_after: str | None) -> float:
    delays = settings.WEBHOOK_RETRY_DELAYS_SECONDS or [0]
    delay = delays[min(attempt, len(delays)) - 1] * random.uniform(0.75, 1.25)
    if retry_after is not None and retry_after.strip().isdigit():
        delay = max(delay, min(float(retry_after), 24 * 3600.0))
    return delay


def webhook_delivery_attempt(*, organization: Organization, delivery_id: uuid.UUID) -> str:
    """Make the due attempt of a delivery, if it has one and no other worker is on it, and record
    the outcome: 2xx succeeded; otherwise another attempt after a backoff, or failed when out of
    attempts. Returns what happened ("skipped", "succeeded", "retrying", "failed"). Idempotent."""
    with organization_schema(organization):
        claim = _claim(organization=organization, delivery_id=delivery_id)
        if claim is None:
            return "skipped"
        delivery = claim.delivery
        body = webhook_delivery_body(organization=organization, delivery=delivery)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: delivery.event_type,
            DELIVERY_HEADER: str(delivery.pk),
            "CognitionOS-Event-Id": str(delivery.event_id),
            "CognitionOS-Attempt": str(claim.attempt),
            SIGNATURE_HEADER: webhook_signature_header(claim.secrets, body),
        }
        started = time.monotonic()
        status_code: int | None = None
        excerpt = ""
        error = ""
        retry_after: str | None = None
        try:
            response = outbound_request(
                method="POST",
                url=delivery.endpoint.url,
                headers=headers,
                content=body,
                timeout_s=settings.WEBHOOK_TIMEOUT_SECONDS,
                max_response_bytes=RESPONSE_READ_BYTES,
            )
            status_code = response.status_code
            excerpt = response.text(512)[:512]
            retry_after = response.headers.get("Retry-After")
            if not response.is_success:
                error = f"HTTP {status_code}" + (" (redirects are not followed)" if 300 <= status_code < 400 else "")
        except OutboundRefused as exc:
            error = f"refused: {exc}"
        except OutboundError as exc:
            error = str(exc)
        duration_ms = int((time.monotonic() - started) * 1000)
        now = timezone.now()
        fields: dict[str, Any] = {
            "locked_until": None,
            "last_response_status": status_code,
            "last_response_excerpt": excerpt,
            "last_error": error[:1000],
            "last_duration_ms": duration_ms,
        }
        if not error:
            outcome = DeliveryStatus.SUCCEEDED
            fields.update(status=outcome, delivered_at=now, next_attempt_at=None)
        elif claim.attempt >= settings.WEBHOOK_MAX_ATTEMPTS:
            outcome = DeliveryStatus.FAILED
            fields.update(status=outcome, next_attempt_at=None)
        else:
            outcome = DeliveryStatus.RETRYING
            delay = _retry_delay_s(claim.attempt, retry_after)
            fields.update(status=outcome, next_attempt_at=now + dt.timedelta(seconds=delay), dispatched_at=None)
        # Only this attempt's lease is recorded: a lease that expired and was taken over is not ours.
        recorded = WebhookDelivery.objects.filter(pk=delivery.pk, attempts=claim.attempt, status__in=SCHEDULED).update(
            **fields
        )
        if not recorded:
            logger.warning(
                "webhook delivery %s: attempt %s outcome not recorded (taken over or deleted)",
                delivery.pk,
                claim.attempt,
            )
        return str(outcome)
