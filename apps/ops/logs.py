"""Log lines: one JSON object per line (or plain text in development), with the context of the
work they were written in, and secrets taken out.

- `ContextFilter` (on the handler) adds request_id, organization, work_kind, work_id and task_id
  from cognitionos.logcontext, and trace_id/span_id while tracing is on.
- `JsonFormatter` (python-json-logger) writes timestamp, level, logger, message, those fields, any
  `extra=` and the traceback; `TextFormatter` the same as one readable line.
- Both formatters redact what they write, last: the message after its arguments were put in,
  `extra` values (by key name and by shape), tracebacks and stack traces. A filter alone could not:
  the traceback is formatted after filters ran. What is redacted: our API keys (`cos_<prefix>_` is
  kept), provider keys (`sk-...`, `sk-ant-...`), Stripe secret and restricted keys and webhook
  secrets, bearer and basic credentials, `password=`/`api_key: ...`-style pairs, passwords in
  URLs, and the literal values of the platform's own secret settings.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from cognitionos.logcontext import log_context_fields

__all__ = ["REDACTED", "ContextFilter", "JsonFormatter", "TextFormatter", "redact", "trace_ids_source"]

REDACTED = "[REDACTED]"

# Key names whose values are secrets wherever they appear (extra fields, dicts, headers).
_SECRET_KEY = re.compile(
    r"(?i)^(?:.*[_-])?(?:password|passwd|passphrase|secret|api[_-]?key|apikey|authorization|"
    r"proxy[_-]authorization|x[_-]api[_-]key|cookie|set[_-]cookie|token|access[_-]token|refresh[_-]token|"
    r"client[_-]secret|private[_-]key|signing[_-]key|webhook[_-]secret|credentials?)$"
)
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # key=value and "key": "value" pairs whose key names a secret (headers, query strings, reprs),
    # first: "Authorization: Bearer x" goes whole.
    (
        re.compile(
            r"""(?i)(["']?\b(?:[\w-]{0,40}[_-])?(?:password|passwd|secret|api[_-]?key|apikey|authorization|"""
            r"""token|client[_-]secret|cookie)["']?\s*[:=]\s*)"""
            r"""(["']?)(?!\[REDACTED\])(?:(?:bearer|basic)\s+)?[^\s"',;&}\]]+"""
        ),
        rf"\1\2{REDACTED}",
    ),
    # Our API keys: the prefix identifies the key (it is shown in the admin); the secret goes.
    (re.compile(r"\b(cos_[0-9a-f]{12}_)[A-Za-z0-9_\-]{8,}"), rf"\1{REDACTED}"),
    # Provider keys: OpenAI (sk-..., sk-proj-...), Anthropic (sk-ant-...).
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), f"sk-{REDACTED}"),
    # Stripe secret and restricted keys, webhook signing secrets.
    (re.compile(r"\b((?:sk|rk)_(?:live|test)_)[A-Za-z0-9]{8,}"), rf"\1{REDACTED}"),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]{8,}"), f"whsec_{REDACTED}"),
    # A bearer credential wherever it is written.
    (re.compile(r"(?i)\b(bearer\s+)(?!\[REDACTED\])[A-Za-z0-9._~+/=\-]{8,}"), rf"\1{REDACTED}"),
    # Passwords in URLs: scheme://user:password@host.
    (re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^/\s:@]+:)[^/\s@]+@"), rf"\1{REDACTED}@"),
]
# Settings whose values are secrets: their literal values are taken out of every line too.
_SECRET_SETTING = re.compile(r"SECRET|PASSWORD|(?:_TOKEN|_API_KEY|_HASH_KEY|ENCRYPTION_KEYS)$")
_MIN_SECRET_LENGTH = 8
_settings_secrets: re.Pattern[str] | None = None
_settings_loaded = False


def _settings_secret_pattern() -> re.Pattern[str] | None:
    """Built once, on the first line written after the settings are ready."""
    global _settings_secrets, _settings_loaded  # noqa: PLW0603 # one lazy cache per process
    if _settings_loaded:
        return _settings_secrets
    from django.conf import settings

    if not settings.configured:
        return None
    values: set[str] = set()
    for name in dir(settings):
        if name.isupper() and _SECRET_SETTING.search(name):
            value = getattr(settings, name, None)
            if isinstance(value, str):
                values.update(part.strip() for part in re.split(r"[,\s]+", value))
    for database in getattr(settings, "DATABASES", {}).values():
        values.add(str(database.get("PASSWORD") or ""))
    values = {value for value in values if len(value) >= _MIN_SECRET_LENGTH}
    # Longest first, so a value that contains another is taken out whole.
    alternatives = "|".join(re.escape(value) for value in sorted(values, key=len, reverse=True))
    _settings_secrets = re.compile(alternatives) if alternatives else None
    _settings_loaded = True
    return _settings_secrets


def redact(text: str) -> str:
    """The text with every secret it contains replaced by [REDACTED]."""
    literal = _settings_secret_pattern()
    if literal is not None:
        text = literal.sub(REDACTED, text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(key: object, value: Any, depth: int = 0) -> Any:
    if isinstance(key, str) and _SECRET_KEY.match(key) and value not in (None, ""):
        return REDACTED
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth < 6 and isinstance(value, Mapping):
        return {name: _redact_value(name, item, depth + 1) for name, item in value.items()}
    if depth < 6 and isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(None, item, depth + 1) for item in value]
    # Text, and objects (a request, an exception) or deeper structures written as their text.
    return redact(value if isinstance(value, str) else str(value))


# Set by apps.ops.tracing while tracing is on: returns (trace_id, span_id) of the current span.
_trace_ids: Callable[[], tuple[str, str] | None] | None = None


def trace_ids_source(source: Callable[[], tuple[str, str] | None] | None) -> None:
    """Tracing's hook: where log lines find the current trace and span ids (None: tracing off)."""
    global _trace_ids  # noqa: PLW0603 # set once at startup
    _trace_ids = source


class ContextFilter(logging.Filter):
    """Adds the context fields to every record the handler writes; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in log_context_fields().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        if _trace_ids is not None and not hasattr(record, "trace_id"):
            ids = _trace_ids()
            if ids is not None:
                record.trace_id, record.span_id = ids
        return True


class JsonFormatter(_JsonFormatter):
    """`{"timestamp", "level", "logger", "message", <context>, <extra>, "exc_info"}` on one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        super().__init__("%(levelname)s %(name)s %(message)s", *args, **kwargs)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["timestamp"] = dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds")
        super().add_fields(log_data, record, message_dict)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {key: _redact_value(key, value) for key, value in log_data.items()}


class TextFormatter(logging.Formatter):
    """A readable line for development (LOG_FORMAT=text), context in brackets, redacted too."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # logging's name
        line = super().formatMessage(record)
        context = " ".join(f"{name}={getattr(record, name)}" for name in _TEXT_FIELDS if hasattr(record, name))
        return f"{line} [{context}]" if context else line

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


_TEXT_FIELDS = ("request_id", "organization", "work_kind", "work_id", "task_id", "trace_id")
