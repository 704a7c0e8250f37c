"""LLM engine figures, against the fake provider at 0 ms latency.

    .venv/bin/python bench/router.py [--calls 400]      (BENCH_PROFILE=1 adds a cProfile of the engine)

- added latency per call of the engine (rate limits, budgets with a hard limit, ledger, rollup,
  breaker, cache miss) over a direct openai SDK call to the same fake server: as the gateway calls
  it (its settlement written by the background batch, after the answer) and as a job does (settled
  with the caller's record before it returns);
- L1 and L2 cache hit latency;
- L3 (semantic cache): hit rate of prompts equal after normalisation, false-hit rate of
  question/negation pairs through the engine, and the same pairs with a bag-of-words embedding
  (a lexical stand-in for a real embedding model, which this machine can't run) at several
  thresholds, through the real pgvector lookup;
- overspend of 200 concurrent calls against a small hard budget.

Runs on its own embedded servers in .data/bench (a fresh database each run). Not a test: compare
ratios within one run; the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._setup import django_on_fresh_database  # noqa: E402 - after the path is set


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def timed(function: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return samples


# Questions and their negations: a semantic cache that answers one with the other's answer is wrong.
PAIRS = [
    ("What is the capital of France?", "What is not the capital of France?"),
    ("Is water wet?", "Is water not wet?"),
    ("Which planet is the largest in the solar system?", "Which planet is not the largest in the solar system?"),
    ("Should I take aspirin with ibuprofen?", "Should I not take aspirin with ibuprofen?"),
    ("Is Python a compiled language?", "Is Python not a compiled language?"),
    ("Does the function return a list?", "Does the function not return a list?"),
    ("Is it safe to eat raw chicken?", "Is it not safe to eat raw chicken?"),
    ("Can I delete this file?", "Can I not delete this file?"),
    ("Is 17 a prime number?", "Is 17 not a prime number?"),
    ("Was the meeting moved to Tuesday?", "Was the meeting not moved to Tuesday?"),
    ("Is the API rate limited per key?", "Is the API not rate limited per key?"),
    ("Does this plan include single sign-on?", "Does this plan exclude single sign-on?"),
]


def bag_of_words(text: str, dimensions: int) -> list[float]:
    import hashlib
    import math
    import re

    vector = [0.0] * dimensions
    for word in re.findall(r"\w+", text.casefold()):
        vector[int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % dimensions] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def semantic_figures(organization: object, principal: object) -> None:
    from decimal import Decimal

    from apps.llm.calls import chat_call_parse, chat_complete
    from apps.llm.models import SEMANTIC_DIMENSIONS, SemanticCacheEntry
    from apps.llm.semantic import normalise, semantic_get, semantic_put, semantic_query
    from apps.llm.services import llm_settings_set
    from apps.tenants.models import Organization

    assert isinstance(organization, Organization)
    llm_settings_set(organization=organization, actor=principal, semantic_cache=True)  # type: ignore[arg-type]

    def ask(text: str) -> str:
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": text}],
            "temperature": 0,
            "max_tokens": 64,
            "cache": {"semantic": True},
        }
        call = chat_call_parse(body)
        return chat_complete(organization=organization, principal=principal, call=call).cache  # type: ignore[arg-type]

    stored = [ask(question) for question, _ in PAIRS]
    started = time.perf_counter()
    same = [ask(f"  {question.upper()} ") for question, _ in PAIRS]
    l3_ms = (time.perf_counter() - started) / len(PAIRS) * 1000
    negated = [ask(negation) for _, negation in PAIRS]
    print(
        f"L3 through the engine (default threshold 0.95, {len(PAIRS)} pairs): stored {stored.count('miss')} answers; "
        f"normalisation-equal prompts hit {same.count('l3')}/{len(PAIRS)} (embedding + lookup, mean {l3_ms:.2f} ms); "
        f"negations hit {negated.count('l3')}/{len(PAIRS)} (false-hit rate {negated.count('l3') / len(PAIRS):.0%})"
    )
    SemanticCacheEntry.objects.all().delete()
    rates = []
    for threshold in (0.8, 0.85, 0.9, 0.95):
        false_hits = 0
        for question, negation in PAIRS:
            query = semantic_query(
                model_key=f"bench-{threshold}",
                payload={"messages": [{"role": "user", "content": question}], "temperature": 0},
            )
            assert query is not None
            vector = bag_of_words(normalise(question), SEMANTIC_DIMENSIONS)
            semantic_put(query=query, embedding=vector, body={"q": question}, cost=Decimal(0), ttl=600)
            probe = bag_of_words(normalise(negation), SEMANTIC_DIMENSIONS)
            false_hits += semantic_get(query=query, embedding=probe, threshold=threshold) is not None
            SemanticCacheEntry.objects.all().delete()
        rates.append(f"{threshold}: {false_hits}/{len(PAIRS)}")
    print(f"L3 false hits of negations with a bag-of-words embedding, by threshold: {'   '.join(rates)}")


def request_checks(parse: Callable[[object], object]) -> None:
    """What the gateway does to a body before the engine (bounded JSON, allowlist, bounds, prompt
    bound), for a typical request and for one with tools and images; part of every call's latency."""
    import json

    from cognitionos.bounded_json import json_loads_bounded

    typical: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "max_tokens": 64,
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You are helpful. " * 20},
            {"role": "user", "content": "Summarise this: " + "lorem ipsum " * 100},
        ],
    }
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 4000}}
    rich = {
        **typical,
        "tools": [tool] * 8,
        "messages": [*typical["messages"], {"role": "user", "content": [{"type": "text", "text": "and this"}, image]}],
    }
    figures = []
    for name, body in (("typical", typical), ("8 tools + an image", rich)):
        raw = json.dumps(body).encode()
        samples = timed(lambda raw=raw: parse(json_loads_bounded(raw)), 5000)  # type: ignore[misc]
        figures.append(f"{name} {statistics.median(samples) * 1e6:.1f} us")
    print(f"request checks per call (bounded JSON + allowlist + bounds), median: {'   '.join(figures)}")


def main() -> None:  # noqa: PLR0915 - one straight script, section by section
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    django_on_fresh_database("cognitionos_bench_router")

    import openai
    from django.conf import settings
    from django.db import connection

    from apps.accounts.principals import Principal
    from apps.llm import caching
    from apps.llm.budgets import attempt_settlements_flush, budget_holds_fold
    from apps.llm.calls import LlmRefusal, chat_call_parse, chat_complete
    from apps.llm.models import BudgetWindow, UsageAttempt
    from apps.llm.services import budget_set
    from apps.tenants.connection import tenant_connection
    from apps.tenants.services import organization_create
    from tests.support.fake_provider import FakeProvider

    fake = FakeProvider().start()
    settings.OPENAI_API_KEY = "sk-bench"
    settings.OPENAI_BASE_URL = fake.openai_base_url
    actor = Principal.system("bench")
    organization = organization_create(
        slug="bench", name="Bench", owner_email="bench@example.com", plan_code="enterprise", actor=actor
    )
    budget_set(
        organization=organization, scope="organization", period="day", limit_usd=Decimal(1000), hard=True, actor=actor
    )
    principal = Principal(kind="api_key", id="1", label="bench")
    tenant_connection().set_tenant(organization)

    messages = [{"role": "user", "content": "How many tokens does this question take?"}]
    direct_client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-bench", max_retries=0)

    def direct() -> None:
        direct_client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, max_tokens=64)  # type: ignore[arg-type]

    call = chat_call_parse({"model": "gpt-4o-mini", "messages": messages, "max_tokens": 64, "cache": {"skip": True}})

    def governed() -> None:  # as the gateway calls it: the settlement goes in the background batch
        chat_complete(organization=organization, principal=principal, call=call)

    def recorded() -> None:  # as a job or a workflow step: settled with the caller's record, before returning
        chat_complete(organization=organization, principal=principal, call=call, on_settled=lambda _: None)

    for function in (direct, governed, recorded):
        timed(function, 30)  # warm connections and caches
    direct_times: list[float] = []
    governed_times: list[float] = []
    recorded_times: list[float] = []
    cpu = {"direct": 0.0, "governed": 0.0, "recorded": 0.0}  # this process's CPU (the fake provider's included)
    for _ in range(args.calls // 50):  # interleaved, so drift on a shared machine hits all alike
        for name, function, samples in (
            ("direct", direct, direct_times),
            ("governed", governed, governed_times),
            ("recorded", recorded, recorded_times),
        ):
            started = time.process_time()
            samples.extend(timed(function, 50))
            if name == "governed":
                attempt_settlements_flush()  # what the batch holds of them: its CPU counts as theirs
            cpu[name] += time.process_time() - started
    if os.environ.get("BENCH_PROFILE"):
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(timed, governed, 200)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
    d50, g50, r50 = (statistics.median(times) for times in (direct_times, governed_times, recorded_times))
    d95, g95, r95 = (percentile(times, 0.95) for times in (direct_times, governed_times, recorded_times))
    print(
        f"direct SDK call to the fake provider:  median {d50 * 1000:6.2f} ms   p95 {d95 * 1000:6.2f} ms"
        f"  (n={len(direct_times)})"
    )
    print(f"through the engine (cache miss):       median {g50 * 1000:6.2f} ms   p95 {g95 * 1000:6.2f} ms")
    print(
        f"added per call:                        median {(g50 - d50) * 1000:6.2f} ms   p95 {(g95 - d95) * 1000:6.2f} ms"
        "   (the gateway's: settled in the background batch)"
    )
    print(
        f"added with the caller's record:        median {(r50 - d50) * 1000:6.2f} ms   p95 {(r95 - d95) * 1000:6.2f} ms"
        "   (a job's or a step's: settled before it returns)"
    )
    # On a loaded machine wall time is mostly waiting for a core; CPU time per call is steadier.
    print(
        f"CPU time per call in this process:     direct {cpu['direct'] / len(direct_times) * 1000:6.2f} ms"
        f"   engine {cpu['governed'] / len(governed_times) * 1000:6.2f} ms"
        f"   added {(cpu['governed'] - cpu['direct']) / len(governed_times) * 1000:6.2f} ms"
        f"   (with the caller's record {(cpu['recorded'] - cpu['direct']) / len(recorded_times) * 1000:6.2f} ms)"
    )
    request_checks(chat_call_parse)

    schema, key = organization.schema_name, "bench-key"
    body = {"choices": [{"message": {"role": "assistant", "content": "cached"}}], "model": "gpt-4o-mini"}
    caching.cache_put(schema=schema, key=key, model_name="gpt-4o-mini", body=body, cost=Decimal("0.001"), ttl=600)
    l1 = timed(lambda: caching.cache_get(schema=schema, key=key), 2000)

    def l2_get() -> None:
        caching.l1.clear()
        caching.cache_get(schema=schema, key=key)

    l2 = timed(l2_get, 1000)
    print(
        f"cache hit lookup: L1 median {statistics.median(l1) * 1e6:6.1f} us   "
        f"L2 median {statistics.median(l2) * 1e6:6.1f} us"
    )

    semantic_figures(organization, principal)

    # Overspend: 200 concurrent calls against a hard budget far smaller than their total.
    tenant_connection().set_schema_to_public()
    other = organization_create(
        slug="frugal", name="Frugal", owner_email="f@example.com", plan_code="enterprise", actor=actor
    )
    limit = Decimal("0.0005")
    budget_set(organization=other, scope="organization", period="day", limit_usd=limit, hard=True, actor=actor)
    fake.latency_s = 0.02
    small = chat_call_parse({"model": "gpt-4o-mini", "messages": messages, "max_tokens": 64, "cache": {"skip": True}})

    def concurrent_call(_: int) -> str:
        tenant_connection().set_tenant(other)
        try:
            chat_complete(organization=other, principal=principal, call=small)
            return "ok"
        except LlmRefusal as error:
            return error.code
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=100) as pool:
        outcomes = list(pool.map(concurrent_call, range(200)))
    budget_holds_fold()  # the last settlements' holds, which the background fold takes within 0.1 s
    tenant_connection().set_tenant(other)
    window = BudgetWindow.objects.get()
    spent = sum((a.cost_usd for a in UsageAttempt.objects.all()), Decimal(0))
    print(
        f"200 concurrent calls, hard limit ${limit}: {outcomes.count('ok')} answered, "
        f"{outcomes.count('budget_exceeded')} refused; spent ${window.spent_usd} (ledger ${spent}); "
        f"overspend ${max(Decimal(0), window.spent_usd - limit, spent - limit)}"
    )
    fake.stop()


if __name__ == "__main__":
    main()
