"""Embeddings through the governed path: the same admission, attempt loop (breakers, the
organization's own key, retries), reservation and ledger as chat calls."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Any

from django.db import transaction

from apps.accounts.principals import Principal
from apps.llm.admission import call_admit
from apps.llm.attempts import Attempts
from apps.llm.budgets import Spender, attempt_settle, connection_await
from apps.llm.models import CallSource
from apps.llm.outcomes import ChatOutcome
from apps.llm.platform.models import ModelKind
from apps.llm.platform.selectors import catalog
from apps.llm.pricing import embedding_worst_case_cost, refuse_unpriced, success_settlement
from apps.llm.providers import CallContext, ChatProvider, Reply
from apps.llm.router import usable
from apps.llm.services import provider_own_keys
from apps.llm.validation import embeddings_call_parse
from apps.tenants.models import Organization


def _embed(provider: ChatProvider, payload: dict[str, Any], context: CallContext) -> Reply:
    return provider.embed(payload, context)  # type: ignore[union-attr]  # only embedding models get here


def embeddings_create(
    *,
    organization: Organization,
    principal: Principal,
    body: Any,
    request_id: str | None = None,
    admit: bool = True,
    source: str = CallSource.OTHER,
    on_settled: Callable[[ChatOutcome], None] | None = None,
) -> ChatOutcome:
    """Embed text through the governed path: rate limits, budget reservation, ledger. `admit=False`
    for an embedding made on behalf of a call that was already admitted (the semantic cache).
    `on_settled` runs in the transaction that settles the attempt (not if it was settled already,
    by the sweeper of a process believed dead): the caller's vectors commit with the ledger row."""
    models = catalog()
    own = frozenset(provider_own_keys(organization=organization))

    def dimensions_of(name: str) -> int | None:
        found = models.get(name)
        if found is None or found.model.kind != ModelKind.EMBEDDING or not usable(found, own):
            return None
        return found.model.embedding_dimensions

    call = embeddings_call_parse(body, max_dimensions=dimensions_of)
    entry = models[call.model]
    refuse_unpriced(entry)
    request_id = request_id or uuid.uuid4().hex
    spender = Spender(organization=organization, principal=principal, source=source)
    if admit:
        call_admit(organization=organization, spender=spender, tokens=call.input_bytes // 4)
    payload = call.payload()
    attempts = Attempts(
        organization=organization,
        spender=spender,
        request_id=request_id,
        payload=lambda _: payload,
        reservation=lambda chosen: embedding_worst_case_cost(chosen, call),
        model_requested=call.model,
    )
    answered = attempts.run([entry], _embed)
    latency_ms = answered.latency_ms()
    settlement = success_settlement(entry, answered.result.usage, latency_ms)
    outcome = ChatOutcome(
        body={**answered.result.body, "model": entry.model.name},
        request_id=request_id,
        model=entry.model.name,
        cost_usd=settlement.cost_usd,
        cache="miss",
        simulated=entry.model.is_simulated,
    )
    connection_await()  # before the caller's transaction opens: it takes the pool's short wait
    with transaction.atomic() if on_settled is not None else contextlib.nullcontext():
        settled = attempt_settle(organization=organization, attempt=answered.attempt, settlement=settlement)
        if settled and on_settled is not None:
            on_settled(outcome)
    attempts.succeeded(entry, latency_ms, settlement.cost_usd)
    return outcome
