"""Portal figures. Issue 10: sign-up to a ready organization, and the members, keys and audit pages
with 1,000 members, 1,000 API keys and 100,000 audit events. Issue 12: the dashboard and the
request log at 1,000,000 ledger rows, and the playground's first token against /v1's.

    .venv/bin/python bench/portal.py [--part all|access|dashboard|requests|playground]
                                     [--signups 30] [--requests 200] [--events 100000]

Prints:
- the sign-up form's POST (account, first organization, its schema cloned, the verification mail
  rendered) as the server handles it, p50 and p95 over `--signups` distinct sign-ups, with the
  password hasher development (and production) uses; the organization is checked usable after each;
- each portal page's server time, p50 and p95 over `--requests` requests after a warm-up, signed in
  as the owner on the organization's host, in a small organization (10 of each) and a full one, and
  the queries each page makes at both sizes: equal counts mean no query per row (no N+1).

Server time is the whole Django stack in-process (middleware, view, template), without a network or
a web server. Runs on its own database in the bench servers (.data/bench). Not a test: the machine is
shared and noisy; compare figures within one run. Goals: sign-up p95 <= 1 s; dashboard p95 <= 150 ms
and request log p95 <= 100 ms at 1,000,000 rows, queries constant; playground first token <= 5 ms
behind /v1's. The issue-12 parts are bench/portal_dashboard.py, portal_requests.py and
portal_playground.py, run in turn (each prints its own method).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
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

PASSWORD = "a-long-enough-passphrase-42"
SMALL, MEMBERS, KEYS = 10, 1000, 1000


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _ms(samples: list[float]) -> str:
    return f"p50 {percentile(samples, 0.5) * 1e3:7.1f} ms, p95 {percentile(samples, 0.95) * 1e3:7.1f} ms"


def bench_signup(signups: int) -> None:
    from django.conf import settings
    from django.contrib.auth.hashers import get_hasher, make_password
    from django.db import connection
    from django.test import Client, override_settings

    from apps.rbac.models import Membership, Role
    from apps.tenants.models import Organization

    def signup(n: int) -> float:
        client = Client(HTTP_HOST="localhost")
        slug = f"signup-{n}"
        form = {
            "email": f"founder{n}@signup.example.com",
            "password1": PASSWORD,
            "password2": PASSWORD,
            "organization_name": f"Sign-up {n}",
            "organization_slug": slug,
        }
        # One client address per sign-up: allauth limits sign-ups to 20 a minute per address.
        started = time.perf_counter()
        response = client.post("/accounts/signup/", form, REMOTE_ADDR=f"10.20.{n // 250}.{n % 250 + 1}")
        elapsed = time.perf_counter() - started
        assert response.status_code == 302 and response["Location"] == "/accounts/confirm-email/", response
        # Usable: the organization, its owner, its host and its schema's tables are there.
        organization = Organization.objects.get(slug=slug)
        assert Membership.objects.get(organization=organization, user__email=form["email"]).role == Role.OWNER
        assert organization.domains.filter(domain=f"{slug}.{settings.BASE_DOMAIN}").exists()
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", [organization.schema_name])
            assert cursor.fetchone()[0] > 0
        return elapsed

    # Mail kept in memory: the development mailbox (.data/mail) stays the developer's; the message
    # is still rendered. Delivery (SMTP in production) is not part of the figure.
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
        for n in range(3):  # warm-up: the template schema, imports, template caches
            signup(10_000 + n)
        times = [signup(n) for n in range(signups)]
    hasher = get_hasher()
    iterations = int(getattr(hasher, "iterations", 0))
    hashing = []
    for _ in range(5):
        started = time.perf_counter()
        make_password(PASSWORD)
        hashing.append(time.perf_counter() - started)
    print(
        f"Sign-up form POST to organization ready (server time), {signups} sign-ups: {_ms(times)} "
        f"(max {max(times) * 1e3:.1f} ms); goal p95 <= 1 s; password hasher {type(hasher).__name__} "
        f"({iterations:,} iterations, {statistics.median(hashing) * 1e3:.0f} ms per password hash)"
    )


def _organization(slug: str, members: int, keys: int, events: int) -> tuple[Organization, User]:
    """An Enterprise organization with `members` memberships (the owner included), `keys` API keys
    and at least `events` chained audit events, written in bulk (the services one by one would take
    minutes; the audit chain is built as bench/audit.py builds it)."""
    from datetime import timedelta

    from django.utils import timezone

    from apps.accounts.models import User
    from apps.accounts.principals import Principal
    from apps.apikeys.keys import key_generate, key_hash
    from apps.apikeys.models import ApiKey
    from apps.rbac.models import CustomRole, Membership, Role
    from apps.rbac.permissions import Permission
    from apps.tenants.connection import tenant_connection
    from apps.tenants.services import organization_create
    from bench.audit import _seed

    owner_email = f"owner@{slug}.example.com"
    organization = organization_create(
        slug=slug, name=slug.title(), owner_email=owner_email, plan_code="enterprise", actor=Principal.system("bench")
    )
    owner = User.objects.get(email=owner_email)
    custom = CustomRole.objects.create(
        organization=organization, name="Auditor", permissions=[Permission.AUDIT_READ.value]
    )
    users = User.objects.bulk_create(
        User(email=f"member{n}@{slug}.example.com", password="!") for n in range(members - 1)
    )
    built_in = [Role.ADMIN, Role.DEVELOPER, Role.BILLING, Role.VIEWER]
    Membership.objects.bulk_create(
        Membership(organization=organization, user=user, role="", custom_role=custom)
        if n % 10 == 0
        else Membership(organization=organization, user=user, role=built_in[n % 4])
        for n, user in enumerate(users)
    )
    now = timezone.now()
    rows = []
    for n in range(keys):
        prefix, secret, _key = key_generate()
        rows.append(
            ApiKey(
                organization=organization,
                name=f"key {n}",
                prefix=prefix,
                secret_hash=key_hash(secret),
                scopes=[Permission.JOBS_READ.value, Permission.JOBS_WRITE.value][: 1 + n % 2],
                user=users[n % len(users)] if users and n % 3 == 0 else None,  # bound keys show their user
                created_by_label=owner_email,
                expires_at=now + timedelta(days=30) if n % 4 == 0 else None,
                last_used_at=now - timedelta(minutes=n) if n % 2 else None,
                revoked_at=now if n % 7 == 0 else None,
            )
        )
    ApiKey.objects.bulk_create(rows)
    _seed(organization, events)
    tenant_connection().set_schema_to_public()
    return organization, owner


def _counting(into: list[str]) -> Callable[..., Any]:
    def wrapper(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        into.append(sql)
        return execute(sql, *args)

    return wrapper


def _get(client: Client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, (path, response.status_code)
    return elapsed


def bench_pages(requests: int, events: int) -> None:
    from django.conf import settings
    from django.db import connection
    from django.test import Client

    started = time.perf_counter()
    sizes = {
        "small": _organization("pages-small", SMALL, SMALL, SMALL * 10),
        "full": _organization("pages-full", MEMBERS, KEYS, events),
    }
    print(
        f"seeded {MEMBERS:,} members, {KEYS:,} keys and {events:,} chained audit events (and a small "
        f"organization of {SMALL} members, {SMALL} keys, {SMALL * 10} events) in {time.perf_counter() - started:.1f} s"
    )
    pages = {
        "members": "/members/",
        "members, page 10": "/members/?members_after={member_cursor}",
        "keys": "/keys/",
        "keys, page 10": "/keys/?before={key_cursor}",
        "audit, newest 50": "/audit/",
        "audit, deep page": "/audit/?before={middle}",
        "audit, by action": "/audit/?action=budget.set",
    }
    clients: dict[str, Client] = {}
    for size, (organization, owner) in sizes.items():
        client = Client(HTTP_HOST=f"{organization.slug}.{settings.BASE_DOMAIN}")
        client.force_login(owner)
        clients[size] = client
    middle = {"small": SMALL * 5, "full": events // 2}
    # Deep pages of members (oldest first) and keys (newest first): their 10th page at full size.
    from apps.apikeys.models import ApiKey
    from apps.rbac.models import Membership

    cursors = {
        size: {
            "member_cursor": Membership.objects.filter(organization=organization)
            .order_by("pk")
            .values_list("pk", flat=True)[min(449, SMALL - 1) if size == "small" else 449],
            "key_cursor": ApiKey.objects.filter(organization=organization)
            .order_by("-pk")
            .values_list("pk", flat=True)[min(449, SMALL - 1) if size == "small" else 449],
        }
        for size, (organization, _owner) in sizes.items()
    }
    rng = random.Random(10)
    print(
        f"Portal page server time, signed in as the owner, {requests} requests each after 20 warm-up; "
        f"queries per page at {SMALL} rows and at full size ({MEMBERS:,} members, {KEYS:,} keys, {events:,} events):"
    )
    for label, template in pages.items():
        counts: dict[str, int] = {}
        sizes_kb: dict[str, float] = {}
        times: dict[str, list[float]] = {"small": [], "full": []}
        paths = {size: template.format(middle=middle[size], **cursors[size]) for size in sizes}
        for size, client in clients.items():
            for _ in range(20):
                _get(client, paths[size])
            # The fewest of three: the per-process tenant and membership caches live 5 s, and on a
            # busy machine one of them may expire just before a counted request (3 queries more).
            fewest: int | None = None
            for _ in range(3):
                queries: list[str] = []
                with connection.execute_wrapper(_counting(queries)):
                    response = client.get(paths[size])
                fewest = len(queries) if fewest is None else min(fewest, len(queries))
            assert fewest is not None
            counts[size], sizes_kb[size] = fewest, len(response.content) / 1024
        order = ["small", "full"] * requests
        rng.shuffle(order)  # interleaved, so drift on a shared machine hits both sizes alike
        for size in order:
            times[size].append(_get(clients[size], paths[size]))
        constant = "constant" if counts["small"] == counts["full"] else "GROWS WITH ROWS"
        print(
            f"  {label:17} full: {_ms(times['full'])}; small: {_ms(times['small'])}; "
            f"queries {counts['small']} -> {counts['full']} ({constant}); HTML {sizes_kb['small']:,.0f} -> "
            f"{sizes_kb['full']:,.0f} KB"
        )
    connection.close()


# The issue-12 pages' figures, each measured by its own script (its own database and servers), in
# a process of its own: `--part` picks them.
PAGE_FIGURES = {
    "dashboard": "bench/portal_dashboard.py",
    "requests": "bench/portal_requests.py",
    "playground": "bench/portal_playground.py",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signups", type=int, default=30)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument(
        "--part",
        choices=["all", "access", *PAGE_FIGURES],
        default="all",
        help="access: sign-up and the members, keys and audit pages; dashboard, requests, playground: "
        "the figures of issue 12 (each also runs alone: bench/portal_<part>.py --help)",
    )
    args = parser.parse_args()
    if args.part in ("all", "access"):
        django_on_fresh_database("cognitionos_bench_portal")
        bench_signup(args.signups)
        bench_pages(args.requests, args.events)
    for part, script in PAGE_FIGURES.items():
        if args.part in ("all", part):
            print(f"\n== {part} ({script})", flush=True)
            subprocess.run([sys.executable, str(ROOT / script)], check=True)


if __name__ == "__main__":
    main()
