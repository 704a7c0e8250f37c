"""The shape of API keys: `cos_<12 hex prefix>_<secret>`, and the keyed hash stored for them."""

import datetime as dt
import hashlib
import hmac
import secrets

from django.conf import settings
from django.utils import timezone

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


def expiry_parse(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """`30d`, `12h`, `90m` from now, or an ISO date (midnight UTC) or date-time (UTC if naive)."""
    text = text.strip()
    now = now or timezone.now()
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if len(text) > 1 and text[-1] in units and text[:-1].isdigit():
        return now + dt.timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is neither a duration (30d, 12h, 90m) nor an ISO date") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)
