"""AES-256-GCM sealing of secrets at rest (organizations' provider keys, webhook signing secrets).

Keys come from `CREDENTIALS_ENCRYPTION_KEYS`: comma-separated `id:base64key` (32 bytes each), the
first one current. Every ciphertext names its key id, so old keys keep decrypting until
`cognitionos credentials rotate` has re-encrypted everything under the current one. The caller's
`context` (for a provider key, the organization's schema and the provider) is bound in as
associated data: a ciphertext copied to another organization or purpose does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from functools import cache

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class Sealed:
    key_id: str
    nonce: bytes
    ciphertext: bytes


@cache
def _keys(configured: str) -> tuple[str, dict[str, AESGCM]]:
    if not configured:
        # Development and tests only: production settings require the variable.
        derived = hashlib.sha256(f"credentials:{settings.SECRET_KEY}".encode()).digest()
        return "dev", {"dev": AESGCM(derived)}
    keys: dict[str, AESGCM] = {}
    order: list[str] = []
    for item in configured.split(","):
        key_id, _, encoded = item.strip().partition(":")
        raw = base64.b64decode(encoded)
        if not key_id or len(raw) != 32:
            raise ImproperlyConfigured("CREDENTIALS_ENCRYPTION_KEYS entries are id:base64(32 bytes)")
        keys[key_id] = AESGCM(raw)
        order.append(key_id)
    return order[0], keys


def current_key_id() -> str:
    return _keys(settings.CREDENTIALS_ENCRYPTION_KEYS)[0]


def seal(plaintext: str, *, context: str) -> Sealed:
    key_id, keys = _keys(settings.CREDENTIALS_ENCRYPTION_KEYS)
    nonce = os.urandom(12)
    return Sealed(key_id, nonce, keys[key_id].encrypt(nonce, plaintext.encode(), context.encode()))


def unseal(sealed: Sealed, *, context: str) -> str:
    _, keys = _keys(settings.CREDENTIALS_ENCRYPTION_KEYS)
    if sealed.key_id not in keys:
        raise ImproperlyConfigured(f"credential encrypted under key {sealed.key_id!r}, which is not configured")
    return keys[sealed.key_id].decrypt(sealed.nonce, sealed.ciphertext, context.encode()).decode()
