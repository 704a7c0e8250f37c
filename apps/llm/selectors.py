"""Reads of the LLM engine that other apps (and the engine's hot path) use."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from apps.llm.models import LlmSettings
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization

# Every call reads the settings; a change reaches every process within this many seconds.
SETTINGS_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class EngineSettings:
    semantic_cache: bool
    semantic_threshold: float
    store_content: bool
    retention_days: int


@dataclass(frozen=True)
class ContentPolicy:
    """What the organization lets us keep: with `store_content` off, only counts and costs are
    stored (no prompts, answers or results); otherwise content is deleted after `retention_days`."""

    store_content: bool
    retention_days: int


_DEFAULTS = LlmSettings()
DEFAULT_SETTINGS = EngineSettings(
    semantic_cache=_DEFAULTS.semantic_cache,
    semantic_threshold=_DEFAULTS.semantic_threshold,
    store_content=_DEFAULTS.store_content,
    retention_days=_DEFAULTS.retention_days,
)

_cache: dict[str, tuple[float, EngineSettings]] = {}
_lock = threading.Lock()


def llm_settings_get(*, organization: Organization) -> EngineSettings:
    """The organization's engine settings (defaults until it changes one), kept per process briefly."""
    now = time.monotonic()
    cached = _cache.get(organization.schema_name)
    if cached is not None and cached[0] > now:
        return cached[1]
    with organization_schema(organization):
        row = LlmSettings.objects.filter(pk=1).first()
    found = (
        DEFAULT_SETTINGS
        if row is None
        else EngineSettings(
            semantic_cache=row.semantic_cache,
            semantic_threshold=row.semantic_threshold,
            store_content=row.store_content,
            retention_days=row.retention_days,
        )
    )
    with _lock:
        _cache[organization.schema_name] = (now + SETTINGS_CACHE_SECONDS, found)
    return found


def llm_settings_forget() -> None:
    with _lock:
        _cache.clear()


def llm_content_policy(*, organization: Organization) -> ContentPolicy:
    """How long the organization's prompts, answers and job results may be kept, if at all."""
    found = llm_settings_get(organization=organization)
    return ContentPolicy(store_content=found.store_content, retention_days=found.retention_days)
