"""Webhook signatures, Stripe-style: `CognitionOS-Signature: t=<unix seconds>,v1=<hex>`.

    v1 = hex(HMAC-SHA256(key=secret.encode(), msg=f"{t}.".encode() + body))

over the exact bytes of the request body. While a rotated secret is still in its grace period the
header carries one `v1=` per valid secret; a receiver accepts the request if any of them matches.
This module uses the standard library only, so receivers can copy it (see docs/webhooks.md).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

SIGNATURE_HEADER = "CognitionOS-Signature"
EVENT_HEADER = "CognitionOS-Event"
DELIVERY_HEADER = "CognitionOS-Delivery"
SCHEME = "v1"


class WebhookSignatureError(Exception):
    """The signature header is missing, malformed, too old, or matches no secret."""


def webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex v1 signature of `body` sent at `timestamp`."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def webhook_signature_header(secrets: Iterable[str], body: bytes, *, timestamp: int | None = None) -> str:
    """The `CognitionOS-Signature` value: one timestamp, one v1 per secret (current first)."""
    t = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={t}", *(f"{SCHEME}={webhook_signature(secret, t, body)}" for secret in secrets)])


def webhook_signature_verify(
    secret: str, header: str | None, body: bytes, tolerance_s: int = 300, *, now: float | None = None
) -> int:
    """Check a `CognitionOS-Signature` header against `secret` and the raw request body.

    Returns the signed timestamp; raises WebhookSignatureError if the header is malformed, its
    timestamp is more than `tolerance_s` seconds away from now (replays), or no v1 signature matches.
    """
    if not header:
        raise WebhookSignatureError("no signature header")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError as exc:
                raise WebhookSignatureError("the timestamp is not an integer") from exc
        elif name == SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise WebhookSignatureError("the header has no timestamp")
    if not signatures:
        raise WebhookSignatureError(f"the header has no {SCHEME} signature")
    current = time.time() if now is None else now
    if tolerance_s > 0 and abs(current - timestamp) > tolerance_s:
        raise WebhookSignatureError("the timestamp is outside the tolerance")
    expected = webhook_signature(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, signature) for signature in signatures):
        raise WebhookSignatureError("no signature matches the secret")
    return timestamp
