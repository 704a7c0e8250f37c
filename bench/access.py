"""Access figures: API-key authentication with scopes, added latency over a request without it.

    .venv/bin/python bench/access.py [--quick]

In-process, through the whole WSGI stack (Django's test client: every middleware, the URL
resolver and the view), against its own embedded servers in .data/bench (or DATABASE_URL /
REDIS_URL if set, in a database of its own). Both requests ask for the same unknown API path, so
the view's work is equal and the difference is the key's: the tenant middleware reading the
bearer token, the resolver (per-process cache, scopes expanded into the principal, last use noted
for the batched write) and the schema switch. Samples alternate, so drift hits both sides alike.
A benchmark, not a test: compare figures within a run. Goal (issue 10): added median <= 0.3 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._setup import django_on_fresh_database  # noqa: E402 - after the path is set


def bench_key_authentication(iterations: int) -> None:
    import logging

    from django.db import connection
    from django.test import Client

    from apps.accounts.principals import Principal
    from apps.apikeys.selectors import apikey_cache_forget
    from apps.apikeys.services import apikey_create
    from apps.apikeys.usage import apikey_last_used_flush
    from apps.tenants.services import organization_create

    organization = organization_create(
        slug="access-bench", name="Access bench", owner_email="owner@access-bench.example.com", actor=Principal.system()
    )
    key = apikey_create(
        organization=organization,
        name="bench",
        actor=Principal.system("bench"),
        scopes=["llm:invoke", "jobs:read", "jobs:write", "knowledge:read"],
    ).key
    logging.getLogger("django.request").setLevel(logging.ERROR)  # a "Not Found" line per request
    client = Client(HTTP_HOST="localhost")
    path = "/api/v1/no-such-endpoint"  # the API's JSON 404: the same work with or without a key
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}

    def once(**extra: str) -> float:
        started = time.perf_counter()
        response = client.get(path, **extra)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        assert response.status_code == 404, response.content
        return elapsed

    for _ in range(200):  # warm imports, the connection, the resolver's cache
        once()
        once(**headers)
    without: list[float] = []
    with_key: list[float] = []
    for _ in range(iterations):
        without.append(once())
        with_key.append(once(**headers))
    cold: list[float] = []
    for _ in range(max(50, iterations // 10)):
        apikey_cache_forget()  # as after the cache's lifetime: a query, the hash check, the scopes
        cold.append(once(**headers))
    flushed = apikey_last_used_flush()
    connection.close()
    base, keyed = statistics.median(without), statistics.median(with_key)
    print(
        f"API-key authentication with scopes, added latency median over a request without it: "
        f"{(keyed - base) * 1e3:.3f} ms (goal <= 0.3 ms; request without a key {base * 1e3:.3f} ms, "
        f"with a key {keyed * 1e3:.3f} ms; median of {iterations} each)"
    )
    print(
        f"  the same, on a resolver cache miss (once per key and process every "
        f"TENANT_RESOLUTION_CACHE_SECONDS): {(statistics.median(cold) - base) * 1e3:.3f} ms "
        f"(median of {len(cold)})"
    )
    print(f"  last use of {flushed} key(s) written in one statement after {iterations + 200 + len(cold)} requests")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    django_on_fresh_database("cognitionos_bench_access")
    bench_key_authentication(iterations=500 if args.quick else 3000)


if __name__ == "__main__":
    main()
