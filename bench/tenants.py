"""Tenancy figures: provisioning time, tenant resolution overhead, `make run` to ready.

    .venv/bin/python bench/tenants.py [--quick]

Runs against its own embedded servers in .data/bench (or DATABASE_URL / REDIS_URL if set, in a
database of its own) and prints the figures. A benchmark, not a test: compare ratios within a run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._setup import django_on_fresh_database  # noqa: E402 - after the path is set


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def bench_provisioning(samples: int, present_counts: list[int]) -> None:
    from apps.accounts.principals import Principal
    from apps.tenants.selectors import organization_list
    from apps.tenants.services import organization_create

    actor = Principal.system("bench")
    counter = iter(range(10**6))

    def create() -> float:
        n = next(counter)
        started = time.perf_counter()
        organization_create(
            slug=f"org-{n:05d}", name=f"Org {n}", owner_email=f"owner{n}@bench.example.com", actor=actor
        )
        return time.perf_counter() - started

    create()  # first call loads the migration graph for the template check; not a provisioning figure
    for present in present_counts:
        while organization_list().count() < present:
            create()
        timings = [create() for _ in range(samples)]
        print(
            f"provisioning with {present:>3} organizations present: "
            f"p50 {percentile(timings, 0.5) * 1000:7.1f} ms   p95 {percentile(timings, 0.95) * 1000:7.1f} ms   "
            f"(n={samples})"
        )


def bench_resolution(iterations: int) -> None:
    from django.db import connection
    from django.http import HttpRequest, HttpResponse
    from django.test import RequestFactory, override_settings

    from apps.tenants.middleware import TenantMiddleware
    from apps.tenants.models import Organization
    from apps.tenants.selectors import organization_cache_forget

    organization = Organization.objects.exclude(schema_name="public").order_by("id").first()
    assert organization is not None
    host = f"{organization.slug}.localhost"

    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    with_tenancy = TenantMiddleware(view)
    factory = RequestFactory()

    def timed(handler: Callable[[HttpRequest], HttpResponse]) -> float:
        samples = []
        for _ in range(iterations):
            request = factory.get("/", HTTP_HOST=host)
            started = time.perf_counter()
            handler(request)
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    timed(with_tenancy)  # warm the connection pool and caches
    bypass = timed(view)
    resolved = timed(with_tenancy)
    organization_cache_forget()
    with override_settings(TENANT_RESOLUTION_CACHE_SECONDS=0):
        uncached = timed(with_tenancy)
    connection.close()
    print(
        f"tenant resolution: view alone {bypass * 1e6:6.1f} us, with tenant middleware {resolved * 1e6:6.1f} us, "
        f"added {(resolved - bypass) * 1e3:.3f} ms per request (median of {iterations})"
    )
    print(
        f"tenant resolution without the per-process cache (a database lookup per request): "
        f"added {(uncached - bypass) * 1e3:.3f} ms per request"
    )


def bench_make_run(port: int) -> None:
    data_dir = ROOT / ".data" / "bench-run"
    shutil.rmtree(data_dir, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env["COGNITIONOS_DATA_DIR"] = str(data_dir)
    data_dir.mkdir(parents=True)
    log = (data_dir.parent / "bench-run.log").open("w")
    for label in ("first start, empty data folder", "restart, existing data folder"):
        started = time.monotonic()
        process = subprocess.Popen(
            ["make", "run", f"PORT={port}"],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        elapsed = None
        while time.monotonic() - started < 300 and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as response:
                    if response.status == 200:
                        elapsed = time.monotonic() - started
                        break
            except OSError:
                time.sleep(0.1)
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=120)
        shown = f"{elapsed:5.1f} s" if elapsed is not None else "not ready within 300 s"
        print(f"make run to /health/ready ({label}): {shown}")
    shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples, no 200-organization point")
    parser.add_argument("--port", type=int, default=18123)
    args = parser.parse_args()
    # A fresh database for every run, so "N organizations present" means exactly N.
    django_on_fresh_database("cognitionos_bench")
    bench_provisioning(samples=10 if args.quick else 30, present_counts=[10] if args.quick else [10, 200])
    bench_resolution(iterations=500 if args.quick else 3000)
    bench_make_run(args.port)


if __name__ == "__main__":
    main()
