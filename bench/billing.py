"""Billing figures.

    .venv/bin/python bench/billing.py [--part entitlement|meters|all] [--calls 400] [--loops 20000]

- entitlement: the entitlement check's added latency on the gateway path (goal: median <= 0.05 ms).
  (1) `entitlement(organization, name)` itself, warm per-process cache, in a loop; (2) the same
  after the cache is dropped (the miss: two queries); (3) the engine's cache-miss call through the
  gateway path (rate limits read requests and tokens per minute from it) with the real check and
  with the check replaced by constants, interleaved, and the difference of the medians.
- meters: meter events per second against the fake Stripe server and the time to drain a backlog
  (bench/billing_meters.py, the meters helper's part).

Runs on its own embedded servers in .data/bench (a fresh database). The machine is shared: compare
within one run.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._setup import django_on_fresh_database  # noqa: E402 - after the path is set


def timed(function: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return samples


def entitlement_part(*, calls: int, loops: int) -> None:  # noqa: PLR0915 - one straight script, section by section
    django_on_fresh_database("cognitionos_bench_billing")

    from decimal import Decimal

    from django.conf import settings

    from apps.accounts.principals import Principal
    from apps.billing.selectors import entitlement, entitlement_cache_forget
    from apps.llm import ratelimits
    from apps.llm.calls import chat_call_parse, chat_complete
    from apps.llm.services import budget_set
    from apps.tenants.connection import tenant_connection
    from apps.tenants.services import organization_create
    from tests.support.fake_provider import FakeProvider

    fake = FakeProvider().start()
    settings.OPENAI_API_KEY = "sk-bench"
    settings.OPENAI_BASE_URL = fake.openai_base_url
    actor = Principal.system("bench")
    organization = organization_create(
        slug="bench-billing", name="Bench", owner_email="bench@example.com", plan_code="enterprise", actor=actor
    )
    budget_set(
        organization=organization, scope="organization", period="day", limit_usd=Decimal(1000), hard=True, actor=actor
    )

    entitlement(organization, "requests_per_minute")  # warm
    warm = timed(lambda: entitlement(organization, "requests_per_minute"), loops)
    counted = timed(lambda: entitlement(organization, "members", used=3), loops)

    def miss() -> None:
        entitlement_cache_forget(organization)
        entitlement(organization, "requests_per_minute")

    cold = timed(miss, max(50, loops // 100))
    print(
        f"entitlement(), warm cache:          median {statistics.median(warm) * 1e3:.5f} ms"
        f"   (a counted limit: {statistics.median(counted) * 1e3:.5f} ms; n={loops})"
    )
    print(f"entitlement(), cache dropped (miss): median {statistics.median(cold) * 1e3:.3f} ms   (n={len(cold)})")

    principal = Principal(kind="api_key", id="1", label="bench")
    tenant_connection().set_tenant(organization)
    messages = [{"role": "user", "content": "How many tokens does this question take?"}]
    call = chat_call_parse({"model": "gpt-4o-mini", "messages": messages, "max_tokens": 64, "cache": {"skip": True}})
    real = ratelimits.__dict__["plan_limit"]
    limits: dict[str, int] = {name: real(organization, name) for name in ("requests_per_minute", "tokens_per_minute")}

    def constant(organization: object, name: str) -> int:
        return limits[name]

    def governed() -> None:
        chat_complete(organization=organization, principal=principal, call=call)

    timed(governed, 30)
    # Adjacent pairs (one call with the check, the next without, order alternating): the median of
    # the pairs' differences is steadier on a busy machine than the difference of two medians.
    with_check: list[float] = []
    without_check: list[float] = []
    differences: list[float] = []
    for number in range(calls):
        pair = {}
        for variant in ("real", "constant") if number % 2 == 0 else ("constant", "real"):
            vars(ratelimits)["plan_limit"] = real if variant == "real" else constant
            started = time.perf_counter()
            governed()
            pair[variant] = time.perf_counter() - started
        with_check.append(pair["real"])
        without_check.append(pair["constant"])
        differences.append(pair["real"] - pair["constant"])
    vars(ratelimits)["plan_limit"] = real
    w50, o50 = statistics.median(with_check), statistics.median(without_check)
    print(
        f"gateway miss path with the check:    median {w50 * 1e3:.3f} ms   without: {o50 * 1e3:.3f} ms"
        f"   (n={calls} pairs)"
    )
    print(
        f"added by the check (paired):         median {statistics.median(differences) * 1e3:+.4f} ms"
        "   (goal <= 0.05 ms; the warm figure above is the check's own cost, read twice per call)"
    )
    fake.stop()


def meters_part() -> None:
    try:
        module = importlib.import_module("bench.billing_meters")
    except ModuleNotFoundError:
        print("meters: bench/billing_meters.py is not there yet (the meters helper's part)")
        return
    module.main([])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("entitlement", "meters", "all"), default="all")
    parser.add_argument("--calls", type=int, default=400, help="gateway calls per variant")
    parser.add_argument("--loops", type=int, default=20_000, help="entitlement() calls timed")
    args = parser.parse_args()
    if args.part in ("entitlement", "all"):
        entitlement_part(calls=args.calls, loops=args.loops)
    if args.part in ("meters", "all"):
        meters_part()


if __name__ == "__main__":
    main()
