"""L3, the semantic cache: an answer found by the cosine similarity of the prompt's embedding
(pgvector, HNSW), in the organization's own schema.

Only for requests whose answer depends on nothing but the user's words: exactly one user message
(optionally after one system or developer message), text only, `temperature` 0. Everything except
the user's text (the model asked for, the system message, tools, response format, every other
parameter) is hashed into `context_hash`, and a lookup only considers entries with the same hash:
an entry never answers for another model, another system prompt or other tools. A high threshold
(0.95 by default) keeps a question from matching its negation (GPTCache #694).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone
from pgvector.django import CosineDistance

from apps.llm.caching import CachedAnswer, cache_key
from apps.llm.models import SEMANTIC_DIMENSIONS, SemanticCacheEntry
from apps.llm.platform.selectors import catalog
from apps.llm.router import usable
from apps.llm.selectors import llm_settings_of_schema
from apps.tenants.connection import tenant_connection

_SYSTEM_ROLES = frozenset({"system", "developer"})
# Rounding: an identical vector's distance may come back as a hair above zero.
_EPSILON = 1e-6


@dataclass(frozen=True)
class SemanticQuery:
    model_key: str
    context_hash: str
    text: str  # the user's words, normalised: this is what is embedded


def _text_of(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if (
        isinstance(content, list)
        and content
        and all(
            isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            for part in content
        )
    ):
        return " ".join(part["text"] for part in content)
    return None  # images, audio, files: not for the semantic cache


def normalise(text: str) -> str:
    """Case and runs of whitespace do not change a question."""
    return " ".join(text.split()).casefold()


def semantic_query(*, model_key: str, payload: dict[str, Any]) -> SemanticQuery | None:
    """The L3 lookup for a request, or None if the request is not one L3 may answer."""
    temperature = payload.get("temperature")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or temperature != 0:
        return None
    messages = payload.get("messages") or []
    if not 1 <= len(messages) <= 2 or messages[-1].get("role") != "user":
        return None
    if len(messages) == 2 and messages[0].get("role") not in _SYSTEM_ROLES:
        return None
    text = _text_of(messages[-1].get("content"))
    if text is None or not text.strip():
        return None
    context = {**payload, "messages": [*messages[:-1], {**messages[-1], "content": None}]}
    return SemanticQuery(
        model_key=model_key, context_hash=cache_key(model=model_key, payload=context), text=normalise(text)
    )


def embedding_model_name() -> str | None:
    """The model that embeds prompts for L3: LLM_SEMANTIC_EMBEDDING_MODEL, else OpenAI's
    text-embedding-3-small when configured, else the simulator's."""
    models = catalog()
    names = (
        [settings.LLM_SEMANTIC_EMBEDDING_MODEL]
        if settings.LLM_SEMANTIC_EMBEDDING_MODEL
        else ["text-embedding-3-small", "simulated-embedding"]
    )
    for name in names:
        entry = models.get(name)
        if entry is not None and usable(entry):
            return name
    return None


def semantic_get(*, query: SemanticQuery, embedding: list[float], threshold: float) -> CachedAnswer | None:
    """The most similar live entry for the same model and context, if it is at least `threshold` similar
    and within the organization's current retention (none in no-content mode)."""
    policy = llm_settings_of_schema(schema=tenant_connection().schema_name)
    if not policy.store_content:
        return None
    now = timezone.now()
    row = (
        SemanticCacheEntry.objects.filter(
            model_name=query.model_key,
            context_hash=query.context_hash,
            expires_at__gt=now,
            created_at__gt=now - dt.timedelta(days=policy.retention_days),
        )
        .annotate(distance=CosineDistance("embedding", embedding))
        .filter(distance__lte=1 - threshold + _EPSILON)
        .order_by("distance")
        .only("response", "cost_usd")
        .first()
    )
    if row is None:
        return None
    return CachedAnswer(body=row.response, cost_usd=row.cost_usd, layer="l3")


def semantic_put(
    *, query: SemanticQuery, embedding: list[float], body: dict[str, Any], cost: Decimal, ttl: int
) -> None:
    """Store a complete, successful answer for later similar prompts, for no longer than the
    organization's retention; nothing in no-content mode."""
    policy = llm_settings_of_schema(schema=tenant_connection().schema_name)
    if len(embedding) != SEMANTIC_DIMENSIONS or not policy.store_content:
        return
    ttl = min(ttl, policy.retention_days * 86400)
    SemanticCacheEntry.objects.create(
        model_name=query.model_key,
        context_hash=query.context_hash,
        embedding=embedding,
        response=body,
        cost_usd=cost,
        expires_at=timezone.now() + dt.timedelta(seconds=ttl),
    )
