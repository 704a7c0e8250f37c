"""The shape of API keys: `cos_<12 hex prefix>_<secret>`, and the keyed hash stored for them."""

import hashlib
import hmac
import secrets

from django.conf import settings

KEY_PREFIX = "cos_"


def key_generate() -> tuple[str, str, str]:
    """A new key: (prefix, secret, the full key to show once)."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return prefix, secret, f"{KEY_PREFIX}{prefix}_{secret}"


def key_hash(secret: str) -> str:
    """Keyed hash of a key's secret: a leaked table alone cannot be used to find or test keys."""
    return hmac.new(settings.API_KEY_HASH_KEY.encode(), secret.encode(), hashlib.sha256).hexdigest()


def key_split(raw: str) -> tuple[str, str] | None:
    if not raw.startswith(KEY_PREFIX):
        return None
    prefix, _, secret = raw[len(KEY_PREFIX) :].partition("_")
    if len(prefix) != 12 or len(secret) < 32:
        return None
    return prefix, secret
