"""Permission-check figures: a member's API request with 1,000 memberships and 20 custom roles.

    .venv/bin/python bench/rbac.py [--quick]

- the permission check itself (the member's permissions for the organization, then the declared
  permission tested against them), p50 and p99, from the per-process cache and from the database
  (a cache miss: once per member and process every MEMBERSHIP_CACHE_SECONDS);
- a session-authenticated request through the whole WSGI stack (Django's test client), median,
  with the membership cache on and off (MEMBERSHIP_CACHE_SECONDS=0): what the cache saves.

On its own embedded servers in .data/bench, in a database of its own. A benchmark, not a test:
compare figures within one run; the machine is shared and noisy. Goal (issue 10): p99 <= 1 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._setup import django_on_fresh_database  # noqa: E402 - after the path is set

if TYPE_CHECKING:
    from apps.accounts.models import User
    from apps.tenants.models import Organization

MEMBERS = 1000
CUSTOM_ROLES = 20


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def populate(rng: random.Random) -> tuple[Organization, list[User]]:
    """An Enterprise organization with MEMBERS memberships, every fifth on one of CUSTOM_ROLES."""
    from apps.accounts.models import User
    from apps.accounts.principals import Principal
    from apps.rbac.models import CustomRole, Membership, Role
    from apps.rbac.permissions import Permission
    from apps.tenants.services import organization_create

    organization = organization_create(
        slug="rbac-bench",
        name="RBAC bench",
        owner_email="owner@rbac-bench.example.com",
        plan_code="enterprise",
        actor=Principal.system("bench"),
    )
    every = [permission.value for permission in Permission if permission is not Permission.ADMIN]
    roles = CustomRole.objects.bulk_create(
        CustomRole(organization=organization, name=f"Role {n}", permissions=rng.sample(every, 6))
        for n in range(CUSTOM_ROLES)
    )
    users = User.objects.bulk_create(
        User(email=f"member{n}@rbac-bench.example.com", password="!") for n in range(MEMBERS - 1)
    )
    built_in = [Role.ADMIN, Role.DEVELOPER, Role.BILLING, Role.VIEWER]
    Membership.objects.bulk_create(
        Membership(organization=organization, user=user, role="", custom_role=roles[n % CUSTOM_ROLES])
        if n % 5 == 0
        else Membership(organization=organization, user=user, role=built_in[n % 4])
        for n, user in enumerate(users)
    )
    assert Membership.objects.filter(organization=organization).count() == MEMBERS

    return organization, users


def bench_check(organization: Organization, users: list[User], iterations: int, rng: random.Random) -> None:
    from apps.rbac.permissions import Permission
    from apps.rbac.selectors import membership_cache_forget, membership_permissions_cached

    user_ids = [user.pk for user in users]

    def check(user_id: int) -> bool:
        held = membership_permissions_cached(user_id=user_id, organization_id=organization.pk)
        return held is not None and Permission.JOBS_READ.value in held

    for user_id in user_ids:  # warm: every member cached once, the connection open
        check(user_id)
    cached: list[float] = []
    cold: list[float] = []
    for _ in range(iterations):
        started = time.perf_counter()
        check(rng.choice(user_ids))
        cached.append(time.perf_counter() - started)
    for _ in range(iterations):
        user_id = rng.choice(user_ids)
        membership_cache_forget()
        started = time.perf_counter()
        check(user_id)
        cold.append(time.perf_counter() - started)
    print(
        f"Permission check per request ({MEMBERS} memberships, {CUSTOM_ROLES} custom roles): "
        f"p99 {percentile(cached, 0.99) * 1e3:.3f} ms from the per-process cache (p50 "
        f"{percentile(cached, 0.5) * 1e3:.4f} ms), p99 {percentile(cold, 0.99) * 1e3:.3f} ms on a cache miss "
        f"(p50 {percentile(cold, 0.5) * 1e3:.3f} ms; one query); goal p99 <= 1 ms; {iterations} samples each"
    )


def counting(into: list[str]) -> Callable[..., Any]:
    def wrapper(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        into.append(sql)
        return execute(sql, *args)

    return wrapper


def bench_requests(organization: Organization, users: list[User], iterations: int, rng: random.Random) -> None:
    """The whole request, cache on and off, alternating so drift hits both alike."""
    from django.conf import settings
    from django.db import connection
    from django.test import Client, override_settings

    clients = []
    # Members with a built-in role (every one of which may read budgets): each answer is a 200.
    for user in rng.sample([user for n, user in enumerate(users) if n % 5], 20):
        client = Client(HTTP_HOST=f"{organization.slug}.{settings.BASE_DOMAIN}")
        client.force_login(user)
        clients.append(client)

    def request(client: Client) -> float:
        started = time.perf_counter()
        response = client.get("/api/v1/budgets")
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.content
        return elapsed

    for client in clients * 10:
        request(client)
    queries_on: list[str] = []
    queries_off: list[str] = []
    with connection.execute_wrapper(counting(queries_on)):
        request(clients[0])
    with override_settings(MEMBERSHIP_CACHE_SECONDS=0), connection.execute_wrapper(counting(queries_off)):
        request(clients[0])
    on: list[float] = []
    off: list[float] = []
    rounds = max(20, iterations // 20)
    for n in range(rounds * len(clients)):
        client = clients[n % len(clients)]
        on.append(request(client))
        with override_settings(MEMBERSHIP_CACHE_SECONDS=0):
            off.append(request(client))
    print(
        f"  a member's API request (GET /api/v1/budgets), median: {statistics.median(on) * 1e3:.3f} ms with the "
        f"membership cache, {statistics.median(off) * 1e3:.3f} ms without (saves "
        f"{(statistics.median(off) - statistics.median(on)) * 1e3:.3f} ms); {len(on)} requests each; "
        f"{len(queries_on)} queries per request with the cache, {len(queries_off)} without"
    )
    print("  queries of a cached request: " + "; ".join(sql.split(" FROM ")[-1][:60] for sql in queries_on))
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    django_on_fresh_database("cognitionos_bench_rbac")
    iterations = 500 if args.quick else 5000
    rng = random.Random(10)
    organization, users = populate(rng)
    bench_check(organization, users, iterations, rng)
    bench_requests(organization, users, iterations, rng)


if __name__ == "__main__":
    main()
