"""Request log figures (issue 12): the log's first page and filtered pages with 1,000,000 ledger rows.

    .venv/bin/python bench/portal_requests.py [--rows 1000000] [--small 10000] [--requests 100] [--explain]

Seeds two organizations' ledgers (UsageAttempt) with SQL generate_series over 90 days — mostly
successes on a few models, 0.5% failures, 0.1% abandoned holds, 2.5% cache hits, 20 API keys and
some members, a rare model (0.1%) — then prints, for each page, the server time p50 and p95 over
`--requests` requests after a warm-up (in-process Django test client, the owner signed in on the
organization's host: middleware, view, query, template; no network, no web server) in the full
organization and in the small one, and the queries each page makes at both sizes: equal counts mean
no query per row. `--explain` prints each page's ledger query plan at full size.

Runs on its own database in the bench servers (.data/bench). Not a test: the machine may be shared
and noisy; compare within one run. Goals: first page and a filtered page p95 <= 100 ms at 1,000,000
rows; queries per page constant in the row count.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._setup import django_on_fresh_database  # noqa: E402 - after the path is set

if TYPE_CHECKING:
    from django.test import Client

    from apps.accounts.models import User
    from apps.tenants.models import Organization

KEYS = 20

# One statement per organization: the ledger rows, ids in time order (as the engine writes them).
_SEED = """
INSERT INTO {schema}.llm_usageattempt (request_id, attempt, status, created_at, settled_at, principal_kind,
    principal_id, principal_label, api_key_id, user_id, model_name, model_requested, source, provider, paid_by,
    input_tokens, cached_input_tokens, output_tokens, reserved_usd, cost_usd, saved_usd, cache_layer, latency_ms,
    error_class, rolled_up)
SELECT md5(s.i::text || %(salt)s), 1, s.status, s.at, s.at,
    CASE WHEN s.i %% 10 = 0 THEN 'user' ELSE 'api_key' END,
    CASE WHEN s.i %% 10 = 0 THEN %(owner)s::text ELSE (%(keys)s::bigint[])[1 + s.i %% {keys}]::text END,
    CASE WHEN s.i %% 10 = 0 THEN %(owner_label)s ELSE 'key ' || (s.i %% {keys}) END,
    CASE WHEN s.i %% 10 = 0 THEN NULL ELSE (%(keys)s::bigint[])[1 + s.i %% {keys}] END,
    CASE WHEN s.i %% 10 = 0 THEN %(owner)s END,
    s.model, CASE WHEN s.i %% 7 = 0 THEN 'policy:cheapest' ELSE s.model END,
    (ARRAY['gateway', 'gateway', 'gateway', 'job', 'workflow_step', 'embeddings', 'playground', 'messages'])
        [1 + s.i %% 8],
    CASE WHEN s.status = 'cache_hit' THEN 'cache' ELSE 'openai' END, 'platform',
    CASE WHEN s.status = 'cache_hit' THEN 0 ELSE 20 + s.i %% 400 END, 0,
    CASE WHEN s.status = 'cache_hit' THEN 0 ELSE 10 + s.i %% 300 END,
    CASE WHEN s.status = 'cache_hit' THEN 0 ELSE 0.0004 END,
    CASE WHEN s.status = 'cache_hit' THEN 0 WHEN s.status = 'swept' THEN 0.0004
        ELSE 0.00008 + (s.i %% 50) * 0.000001 END,
    CASE WHEN s.status = 'cache_hit' THEN 0.0001 ELSE 0 END,
    CASE WHEN s.status = 'cache_hit' THEN (ARRAY['l1', 'l2', 'l4'])[1 + s.i %% 3] ELSE '' END,
    CASE WHEN s.status = 'swept' THEN NULL ELSE 30 + s.i %% 900 END,
    CASE WHEN s.status = 'failed' THEN 'RateLimitError' WHEN s.status = 'swept' THEN 'abandoned' ELSE '' END,
    true
FROM (
    SELECT i,
        now() - (%(rows)s - i) * interval '90 days' / %(rows)s AS at,
        CASE WHEN i %% 200 = 0 THEN 'failed' WHEN i %% 1000 = 1 THEN 'swept' WHEN i %% 40 = 2 THEN 'cache_hit'
            ELSE 'succeeded' END AS status,
        CASE WHEN i %% 1000 = 999 THEN 'gpt-4-turbo' WHEN i %% 100 < 50 THEN 'gpt-4o-mini'
            WHEN i %% 100 < 80 THEN 'simulated-mini' WHEN i %% 100 < 95 THEN 'claude-3-5-haiku'
            ELSE 'gpt-4o' END AS model
    FROM generate_series(1, %(rows)s) AS i
) AS s
"""


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _ms(samples: list[float]) -> str:
    return f"p50 {percentile(samples, 0.5) * 1e3:6.1f} ms, p95 {percentile(samples, 0.95) * 1e3:6.1f} ms"


def _organization(slug: str, rows: int) -> tuple[Organization, User, list[int]]:
    """An organization with `KEYS` API keys and `rows` ledger rows; its owner and key ids."""
    from django.db import connection

    from apps.accounts.models import User
    from apps.accounts.principals import Principal
    from apps.apikeys.services import apikey_create
    from apps.tenants.connection import tenant_connection
    from apps.tenants.services import organization_create

    actor = Principal.system("bench")
    owner_email = f"owner@{slug}.example.com"
    organization = organization_create(
        slug=slug, name=slug.title(), owner_email=owner_email, plan_code="enterprise", actor=actor
    )
    owner = User.objects.get(email=owner_email)
    keys = [apikey_create(organization=organization, name=f"key {n}", actor=actor).api_key.pk for n in range(KEYS)]
    tenant_connection().set_schema_to_public()
    schema = connection.ops.quote_name(organization.schema_name)
    with connection.cursor() as cursor:
        cursor.execute(
            _SEED.format(schema=schema, keys=KEYS),
            {"salt": slug, "owner": owner.pk, "owner_label": owner_email, "keys": keys, "rows": rows},
        )
        cursor.execute(f"ANALYZE {schema}.llm_usageattempt")
    return organization, owner, keys


def _counting(into: list[str]) -> Callable[..., Any]:
    def wrapper(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        into.append(sql)
        return execute(sql, *args)

    return wrapper


def _get(client: Client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, (path, response.status_code, response.content[:500])
    return elapsed


def _explain(organization: Organization, path: str) -> None:
    """The ledger query of a page at full size, as the planner runs it."""
    from django.db import connection

    from apps.tenants.connection import organization_schema, tenant_connection

    queries: list[tuple[str, Any]] = []

    def keep(execute: Callable[..., Any], sql: str, params: Any, *rest: Any) -> Any:
        if "llm_usageattempt" in sql:
            queries.append((sql, params))
        return execute(sql, params, *rest)

    with connection.execute_wrapper(keep):
        _CLIENTS["full"].get(path)
    with organization_schema(organization), connection.cursor() as cursor:
        for sql, params in queries:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params)
            for (line,) in cursor.fetchall():
                print(f"      {line}")
    tenant_connection().set_schema_to_public()


_CLIENTS: dict[str, Client] = {}


def bench(rows: int, small_rows: int, requests: int, explain: bool) -> None:
    import datetime as dt

    from django.conf import settings
    from django.db import connection
    from django.test import Client

    started = time.perf_counter()
    sizes = {"small": _organization("requests-small", small_rows), "full": _organization("requests-full", rows)}
    print(
        f"seeded {rows:,} ledger rows (and {small_rows:,} in a small organization) over 90 days "
        f"in {time.perf_counter() - started:.1f} s"
    )
    for size, (organization, owner, _keys) in sizes.items():
        client = Client(HTTP_HOST=f"{organization.slug}.{settings.BASE_DOMAIN}")
        client.force_login(owner)
        _CLIENTS[size] = client
    day = (dt.datetime.now(dt.UTC) - dt.timedelta(days=30)).replace(second=0, microsecond=0)
    since, until = day.strftime("%Y-%m-%dT%H:%M"), (day + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")

    def paths(size: str) -> dict[str, str]:
        organization, _owner, keys = sizes[size]
        from apps.llm.models import UsageAttempt
        from apps.tenants.connection import organization_schema, tenant_connection

        with organization_schema(organization):
            middle = UsageAttempt.objects.order_by("-created_at", "-id")[(rows if size == "full" else small_rows) // 2]
            prefix = middle.request_id[:6]
        tenant_connection().set_schema_to_public()
        cursor = f"{int(middle.created_at.timestamp() * 1_000_000)}.{middle.pk}"
        return {
            "first page": "/requests/",
            "deep page (keyset)": f"/requests/?older={cursor}",
            "status=failed": "/requests/?status=failed",
            "status=swept (rare)": "/requests/?status=swept",
            "model (0.1% of rows)": "/requests/?model=gpt-4-turbo",
            "one API key": f"/requests/?key={keys[3]}",
            "cache layer l2": "/requests/?cache=l2",
            "a source with no calls": "/requests/?source=retrieval",
            "request id prefix": f"/requests/?request={prefix}",
            "one day, 30 days ago": f"/requests/?since={since}&until={until}",
            "failed + model": "/requests/?status=failed&model=gpt-4o",
            "call detail": f"/requests/{middle.request_id}/",
        }

    all_paths = {size: paths(size) for size in sizes}
    rng = random.Random(12)
    print(
        f"Request log server time, owner signed in, {requests} requests each after 10 warm-up; "
        f"queries per page at {small_rows:,} rows -> {rows:,} rows:"
    )
    for label in all_paths["full"]:
        counts: dict[str, int] = {}
        times: dict[str, list[float]] = {"small": [], "full": []}
        for size, client in _CLIENTS.items():
            for _ in range(10):
                _get(client, all_paths[size][label])
            # The fewest of three: the per-process tenant and membership caches live 5 s.
            fewest: int | None = None
            for _ in range(3):
                queries: list[str] = []
                with connection.execute_wrapper(_counting(queries)):
                    _get(client, all_paths[size][label])
                fewest = len(queries) if fewest is None else min(fewest, len(queries))
            assert fewest is not None
            counts[size] = fewest
        order = ["small", "full"] * requests
        rng.shuffle(order)  # interleaved, so drift on a shared machine hits both sizes alike
        for size in order:
            times[size].append(_get(_CLIENTS[size], all_paths[size][label]))
        constant = "constant" if counts["small"] == counts["full"] else "GROWS WITH ROWS"
        print(
            f"  {label:22} full: {_ms(times['full'])}; small: {_ms(times['small'])}; "
            f"queries {counts['small']} -> {counts['full']} ({constant})"
        )
        if explain:
            _explain(sizes["full"][0], all_paths["full"][label])
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--explain", action="store_true", help="print each page's ledger query plan at full size")
    args = parser.parse_args()
    django_on_fresh_database("cognitionos_bench_requests")
    bench(args.rows, args.small, args.requests, args.explain)


if __name__ == "__main__":
    main()
