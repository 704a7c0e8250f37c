"""The dashboard's figure (issue 12): server time of the portal's Dashboard page for an organization
with 1,000,000 ledger rows over 90 days, and the queries per request at 10,000 rows and at full size.

    .venv/bin/python bench/portal_dashboard.py [--rows 1000000] [--small 10000] [--requests 100]

Builds two organizations (their ledgers written by SQL generate_series in their schemas: 20 API keys,
10 people, 6 models, a cache hit in five, an error in fifty, spread evenly over 90 days), folds them
into the rollups with usage_fold (as the beat does, timed), then requests /usage/ for every range as
the owner on the organization's host with Django's test Client, in-process (middleware, view,
template; no network, no web server): p50 and p95 over `--requests` requests per range after a
warm-up, small and full interleaved. Goal: p95 <= 150 ms at 1,000,000 rows; queries per request equal
at both sizes. Runs on its own database in the bench servers (.data/bench).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._setup import django_on_fresh_database  # noqa: E402 - after the path is set
from bench.portal import _counting, _ms  # noqa: E402

if TYPE_CHECKING:
    from django.test import Client

    from apps.accounts.models import User
    from apps.tenants.models import Organization

KEYS, PEOPLE = 20, 10
MODELS = ("gpt-4o-mini", "gpt-4.1", "claude-haiku-4-5", "claude-sonnet-4-5", "simulated-mini", "simulated-pro")
RANGES = ("24h", "7d", "30d", "90d")

# Every ledger column the bench doesn't set takes its field's default (the ledger may gain columns).
_SET = {
    "request_id": "'bench-' || g",
    "attempt": "1",
    "status": "CASE WHEN g % 50 = 0 THEN 'failed' WHEN g % 5 = 0 THEN 'cache_hit' ELSE 'succeeded' END",
    "created_at": "at",
    "settled_at": "at",
    "principal_kind": "CASE WHEN g % 4 = 0 THEN 'user' ELSE 'api_key' END",
    "api_key_id": "CASE WHEN g % 4 = 0 THEN NULL ELSE (%(keys)s::bigint[])[1 + g % {keys}] END",
    "user_id": "CASE WHEN g % 4 = 0 THEN (%(people)s::bigint[])[1 + g % {people}] END",
    "model_name": "(%(models)s::text[])[1 + (g / 7) % {models}]",
    "provider": "'simulator'",
    "input_tokens": "200 + g % 1800",
    "output_tokens": "50 + g % 400",
    "cost_usd": "CASE WHEN g % 5 = 0 OR g % 50 = 0 THEN 0 ELSE (200 + g % 1800) * 0.0000006 END",
    "saved_usd": "CASE WHEN g % 5 = 0 AND g % 50 <> 0 THEN (200 + g % 1800) * 0.0000006 ELSE 0 END",
    "cache_layer": "CASE WHEN g % 5 = 0 AND g % 50 <> 0 THEN 'l1' ELSE '' END",
    # Answers' latency spread over three orders of magnitude (a hit's a few ms).
    "latency_ms": "CASE WHEN g % 5 = 0 AND g % 50 <> 0 THEN 2 + g % 5 "
    "ELSE 150 + (g::bigint * 7919) % 900 * (1 + g % 7) END",
    "error_class": "CASE WHEN g % 50 = 0 THEN 'timeout' ELSE '' END",
}


def _ledger(organization: Organization, rows: int, keys: list[int], people: list[int]) -> None:
    """`rows` settled attempts spread evenly over the last 90 days, in one INSERT ... SELECT."""
    from django.db import connection

    from apps.llm.models import UsageAttempt
    from apps.tenants.connection import organization_schema

    columns, values, defaults = [], [], {}
    for field in UsageAttempt._meta.concrete_fields:
        if field.primary_key or field.name == "rolled_up":
            continue
        columns.append(field.column)
        if field.name in _SET:
            expression = _SET[field.name].format(keys=len(keys), people=len(people), models=len(MODELS))
            values.append(expression.replace(" % ", " %% "))  # the modulo, not a placeholder
        else:
            defaults[field.column] = field.get_default()
            values.append(f"%({field.column})s")
    statement = (
        f"INSERT INTO llm_usageattempt ({', '.join(columns)}) "  # noqa: S608 - names from the model
        f"SELECT {', '.join(values)} FROM generate_series(1, %(rows)s) AS g, "
        "LATERAL (SELECT now() - interval '90 days' * (g::float / %(rows)s)) AS t(at)"
    )
    with organization_schema(organization), connection.cursor() as cursor:
        cursor.execute(statement, {"rows": rows, "keys": keys, "people": people, "models": list(MODELS), **defaults})


def _organization(slug: str, rows: int) -> tuple[Organization, User, float]:
    from django.db import connection

    from apps.accounts.models import User
    from apps.accounts.principals import Principal
    from apps.apikeys.keys import key_generate, key_hash
    from apps.apikeys.models import ApiKey
    from apps.llm.budgets import usage_fold
    from apps.rbac.models import Membership, Role
    from apps.tenants.connection import tenant_connection
    from apps.tenants.services import organization_create

    owner_email = f"owner@{slug}.example.com"
    organization = organization_create(
        slug=slug, name=slug.title(), owner_email=owner_email, plan_code="enterprise", actor=Principal.system("bench")
    )
    owner = User.objects.get(email=owner_email)
    people = User.objects.bulk_create(User(email=f"person{n}@{slug}.example.com", password="!") for n in range(PEOPLE))
    Membership.objects.bulk_create(Membership(organization=organization, user=u, role=Role.DEVELOPER) for u in people)
    keys = []
    for n in range(KEYS):
        prefix, secret, _ = key_generate()
        keys.append(
            ApiKey(
                organization=organization,
                name=f"service {n}",
                prefix=prefix,
                secret_hash=key_hash(secret),
                scopes=["llm:invoke"],
                created_by_label=owner_email,
            )
        )
    ApiKey.objects.bulk_create(keys)
    _ledger(organization, rows, [key.pk for key in keys], [person.pk for person in people])
    tenant_connection().set_schema_to_public()
    started = time.perf_counter()
    folded = usage_fold(organization=organization)
    fold_seconds = time.perf_counter() - started
    assert folded == rows, (folded, rows)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE llm_platform_usagebucket")
    return organization, owner, fold_seconds


def _get(client: Client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, (path, response.status_code)
    return elapsed


def _queries(client: Client, path: str) -> int:
    """The fewest of three (a per-process cache of the tenant or the membership may expire just
    before one of them, as bench/portal.py notes)."""
    from django.db import connection

    fewest: int | None = None
    for _ in range(3):
        queries: list[str] = []
        with connection.execute_wrapper(_counting(queries)):
            client.get(path)
        fewest = len(queries) if fewest is None else min(fewest, len(queries))
    assert fewest is not None
    return fewest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    django_on_fresh_database("cognitionos_bench_dashboard")
    from django.conf import settings
    from django.db import connection
    from django.test import Client

    from apps.llm.platform.models import UsageBucket

    sizes: dict[str, Any] = {}
    for size, rows in (("small", args.small), ("full", args.rows)):
        started = time.perf_counter()
        organization, owner, fold_seconds = _organization(f"dash-{size}", rows)
        buckets = UsageBucket.objects.filter(organization=organization)
        hours, days = buckets.filter(span="hour").count(), buckets.filter(span="day").count()
        print(
            f"{size}: {rows:,} ledger rows over 90 days written and folded in {time.perf_counter() - started:.1f} s "
            f"(fold {fold_seconds:.1f} s, {rows / fold_seconds:,.0f} rows/s) -> {hours:,} hour and {days:,} day buckets"
        )
        client = Client(HTTP_HOST=f"{organization.slug}.{settings.BASE_DOMAIN}")
        client.force_login(owner)
        sizes[size] = client
    print(
        f"Dashboard server time (in-process, signed in as the owner), {args.requests} requests per range after 10 "
        f"warm-up; queries per request at {args.small:,} and at {args.rows:,} rows:"
    )
    rng = random.Random(12)
    for range_key in RANGES:
        path = f"/usage/?range={range_key}"
        counts = {}
        for size, client in sizes.items():
            for _ in range(10):
                _get(client, path)
            counts[size] = _queries(client, path)
        times: dict[str, list[float]] = {"small": [], "full": []}
        order = ["small", "full"] * args.requests
        rng.shuffle(order)  # interleaved: drift on a shared machine hits both alike
        for size in order:
            times[size].append(_get(sizes[size], path))
        constant = "constant" if counts["small"] == counts["full"] else "GROWS WITH ROWS"
        print(
            f"  {range_key:>4}  full: {_ms(times['full'])}; small: {_ms(times['small'])}; "
            f"queries {counts['small']} -> {counts['full']} ({constant})"
        )
    export = "/usage/export.csv?range=90d&by=key"
    export_times = [_get(sizes["full"], export) for _ in range(max(10, args.requests // 5))]
    print(f"  CSV by key, 90 days, full: {_ms(export_times)}")
    connection.close()


if __name__ == "__main__":
    main()
