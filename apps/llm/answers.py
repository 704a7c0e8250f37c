"""Cache orchestration for chat calls: which layers a call may be answered from (L1, L2, L4, then
L3 when the call and the organization opt in), recording a hit, and filling the caches after a miss.
The stores themselves are apps.llm.caching (exact) and apps.llm.semantic (L3)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings

from apps.accounts.principals import Principal
from apps.billing.selectors import entitlement
from apps.llm import caching
from apps.llm.budgets import Spender, cache_hit_record
from apps.llm.content import ContentDraft
from apps.llm.embeddings import embeddings_create
from apps.llm.models import SEMANTIC_DIMENSIONS, CallSource
from apps.llm.refusals import LlmRefusal
from apps.llm.selectors import EngineSettings, llm_settings_get
from apps.llm.semantic import SemanticQuery, embedding_model_name, semantic_get, semantic_put, semantic_query
from apps.llm.validation import ChatCall
from apps.tenants.models import Organization

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Semantic:
    query: SemanticQuery
    embedding: list[float]
    cost_usd: Decimal  # what embedding the prompt cost


def _derived_request_id(request_id: str, suffix: str) -> str:
    derived = f"{request_id}.{suffix}"
    if len(derived) <= 64:
        return derived
    return f"{hashlib.sha256(request_id.encode()).hexdigest()[:60]}.{suffix}"


def _semantic_prepare(
    *, organization: Organization, principal: Principal, call: ChatCall, model_key: str, request_id: str
) -> _Semantic | None:
    """The request's L3 query and its prompt's embedding, made through the governed embeddings path
    (metered, budgeted, in the ledger under `<request id>.l3`); None if L3 can't be used for it."""
    query = semantic_query(model_key=model_key, payload=call.payload)
    model_name = embedding_model_name() if query is not None else None
    if query is None or model_name is None:
        return None
    try:
        outcome = embeddings_create(
            organization=organization,
            principal=principal,
            body={"model": model_name, "input": query.text, "encoding_format": "float"},
            request_id=_derived_request_id(request_id, "l3"),
            admit=False,
            source=CallSource.SEMANTIC_CACHE,
        )
    except LlmRefusal as error:
        logger.warning("semantic cache skipped: the prompt could not be embedded (%s)", error.code)
        return None
    data = outcome.body.get("data") or [{}]
    vector = data[0].get("embedding")
    if not isinstance(vector, list) or len(vector) != SEMANTIC_DIMENSIONS:
        logger.warning("semantic cache skipped: %s does not give %d floats", model_name, SEMANTIC_DIMENSIONS)
        return None
    return _Semantic(query=query, embedding=vector, cost_usd=outcome.cost_usd)


class CallCache:
    """The caches as one chat call sees them: its key, whether it may use them at all (the request
    didn't skip them, the organization stores content), and, after an L3 lookup, the prompt's
    embedding and what it cost (charged to the call whether it hit or not)."""

    def __init__(self, *, organization: Organization, call: ChatCall, streaming: bool = False) -> None:
        self.organization, self.call = organization, call
        self.settings: EngineSettings = llm_settings_get(organization=organization)
        # A policy's answer came from a model allowed when it was stored: the allowed models are
        # part of its key, so a narrower list is never answered by a model it leaves out.
        self.model_key = call.model or f"policy:{call.policy}:{call.min_quality}{self.settings.allowed_digest}"
        self.key = caching.cache_key(model=self.model_key, payload=call.payload)
        # A stream replays a cached answer, but only a non-streaming request's call may be stored
        # under its own flag; the stream path fills the cache from its transcript.
        usable = not call.cache_skip and (streaming or not call.stream)
        self.enabled = usable and self.settings.store_content
        self.semantic: _Semantic | None = None

    @property
    def embedding_cost(self) -> Decimal:
        return self.semantic.cost_usd if self.semantic is not None else Decimal(0)

    def lookup(self, *, principal: Principal, request_id: str, semantic: bool = True) -> caching.CachedAnswer | None:
        """An exact hit (L1, L2, L4), else, when the call and the organization opt in, an L3 hit."""
        if not self.enabled:
            return None
        hit = caching.cache_get(schema=self.organization.schema_name, key=self.key)
        if (
            hit is None
            and semantic
            and self.call.cache_semantic
            and self.settings.semantic_cache
            # A plan feature: after a downgrade the setting stays but the layer is not used.
            and entitlement(self.organization, "semantic_cache").allowed
        ):
            self.semantic = _semantic_prepare(
                organization=self.organization,
                principal=principal,
                call=self.call,
                model_key=self.model_key,
                request_id=request_id,
            )
            if self.semantic is not None:
                hit = semantic_get(
                    query=self.semantic.query,
                    embedding=self.semantic.embedding,
                    threshold=self.settings.semantic_threshold,
                )
        return hit

    def ttl(self) -> int:
        """A cached answer lives for the request's TTL (or the default), never beyond the retention."""
        return min(self.call.cache_ttl or settings.LLM_CACHE_TTL_S, self.settings.retention_days * 86400)

    def fill(self, *, model_name: str, body: dict[str, Any], cost: Decimal) -> None:
        """Store an answer in the exact layers and, if this call looked in L3, in L3 too."""
        ttl = self.ttl()
        caching.cache_put(
            schema=self.organization.schema_name, key=self.key, model_name=model_name, body=body, cost=cost, ttl=ttl
        )
        if self.semantic is not None:
            semantic_put(query=self.semantic.query, embedding=self.semantic.embedding, body=body, cost=cost, ttl=ttl)


def hit_record(
    *,
    spender: Spender,
    request_id: str,
    hit: caching.CachedAnswer,
    model_requested: str = "",
    content: ContentDraft | None = None,
) -> str:
    """Put a cache hit in the ledger (no cost, what it saved), with the call's content if the
    organization keeps it; the answering model's name."""
    model_name = str(hit.body.get("model", ""))
    cache_hit_record(
        spender=spender,
        request_id=request_id,
        model_name=model_name,
        cache_layer=hit.layer,
        saved_usd=hit.cost_usd,
        model_requested=model_requested,
        content=content,
    )
    return model_name
