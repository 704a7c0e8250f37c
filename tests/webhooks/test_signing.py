"""The receiver-side check of `CognitionOS-Signature` (what docs/webhooks.md tells receivers to do)."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import pytest

from apps.webhooks.signing import WebhookSignatureError, webhook_signature_header, webhook_signature_verify

SECRET = "whsec_test"
BODY = b'{"id":"e1","type":"job.succeeded","data":{}}'
NOW = 1_800_000_000


def test_the_header_is_t_and_v1_hmac_sha256_over_timestamp_dot_body() -> None:
    header = webhook_signature_header([SECRET], BODY, timestamp=NOW)
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={NOW},v1={expected}"
    assert webhook_signature_verify(SECRET, header, BODY, now=NOW + 10) == NOW


@pytest.mark.parametrize(
    ("secret", "body", "now", "reason"),
    [
        ("whsec_other", BODY, NOW, "no signature matches"),
        (SECRET, BODY + b" ", NOW, "no signature matches"),
        (SECRET, BODY, NOW + 301, "outside the tolerance"),
        (SECRET, BODY, NOW - 301, "outside the tolerance"),
    ],
)
def test_wrong_secret_changed_body_and_old_timestamps_are_rejected(
    secret: str, body: bytes, now: int, reason: str
) -> None:
    header = webhook_signature_header([SECRET], BODY, timestamp=NOW)
    with pytest.raises(WebhookSignatureError, match=reason):
        webhook_signature_verify(secret, header, body, now=now)


def test_a_replayed_header_with_a_new_timestamp_does_not_match() -> None:
    header = webhook_signature_header([SECRET], BODY, timestamp=NOW)
    forged = header.replace(f"t={NOW}", f"t={NOW + 3600}")
    with pytest.raises(WebhookSignatureError, match="no signature matches"):
        webhook_signature_verify(SECRET, forged, BODY, now=NOW + 3600)


@pytest.mark.parametrize("header", [None, "", "v1=abc", f"t={NOW}", "t=soon,v1=abc", "garbage"])
def test_malformed_headers_are_rejected(header: str | None) -> None:
    with pytest.raises(WebhookSignatureError):
        webhook_signature_verify(SECRET, header, BODY, now=NOW)


def test_during_a_rotation_either_secret_verifies() -> None:
    header = webhook_signature_header(["whsec_new", "whsec_old"], BODY, timestamp=NOW)
    assert header.count("v1=") == 2
    assert webhook_signature_verify("whsec_new", header, BODY, now=NOW) == NOW
    assert webhook_signature_verify("whsec_old", header, BODY, now=NOW) == NOW


def test_the_verification_example_in_the_docs_accepts_our_signatures_and_rejects_forgeries() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/webhooks.md", "exec"), namespace)  # noqa: S102  # our own documentation
    verify, invalid = namespace["verify"], namespace["InvalidSignature"]
    now = int(time.time())
    header = webhook_signature_header(["whsec_new", "whsec_old"], BODY, timestamp=now)
    assert verify("whsec_new", header, BODY) == now
    assert verify("whsec_old", header, BODY) == now
    for secret, body, signed in (
        ("whsec_other", BODY, header),
        ("whsec_new", BODY + b"x", header),
        ("whsec_new", BODY, webhook_signature_header(["whsec_new"], BODY, timestamp=now - 3600)),
        ("whsec_new", BODY, None),
    ):
        with pytest.raises(invalid):
            verify(secret, signed, body)
