"""Tenancy figures: provisioning time by organizations present, the `migrate` a deploy runs (nothing
to apply, and one new migration), the catalogs per organization, tenant resolution, `make run` to ready.

    .venv/bin/python bench/tenants.py [--quick] [--organizations 10000] [--rebuild] [--skip-make-run]

10 and 1,000 organizations are measured on a fresh database (`cognitionos_bench_tenants`). With
`--organizations N` above 1,000, a database of N organizations is built once and kept
(`cognitionos_bench_tenants_N`, in .data/bench, with the time the build took) for later runs;
`--rebuild` builds it again. The databases use bench/tenant_settings.py: the project plus a tenant
app whose migrations the benchmark writes, one more per measurement of "apply a new migration"
(a nullable column and an index). A benchmark, not a test: compare ratios within a run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
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

from bench._setup import django_on_database  # noqa: E402 - after the path is set

BENCH_DATA = ROOT / ".data" / "bench"
FRESH_DATABASE = "cognitionos_bench_tenants"
MIGRATION_JOBS = 2  # the machine's cores


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def migrations_dir(database: str) -> Path:
    return BENCH_DATA / "tenant-migrations" / database


def migrations_write(database: str, *, fresh: bool) -> int:
    """The bench app's migrations package for `database`: 0001 on a fresh one, else what is there.
    Returns the number of the last migration."""
    package = migrations_dir(database) / "benchtenant_migrations"
    if fresh:
        shutil.rmtree(package, ignore_errors=True)
    if not package.exists():
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "0001_initial.py").write_text(
            "from django.db import migrations, models\n\n\n"
            "class Migration(migrations.Migration):\n"
            "    initial = True\n"
            "    dependencies: list[tuple[str, str]] = []\n"
            "    operations = [\n"
            "        migrations.CreateModel(\n"
            '            name="Note",\n'
            "            fields=[\n"
            '                ("id", models.BigAutoField(primary_key=True)),\n'
            '                ("text", models.TextField(default="")),\n'
            "            ],\n"
            "        ),\n"
            "    ]\n"
        )
    return max(int(path.name[:4]) for path in package.glob("[0-9][0-9][0-9][0-9]_*.py"))


def migration_add(database: str) -> str:
    """Write the next migration of the bench app: a nullable column and an index on it."""
    package = migrations_dir(database) / "benchtenant_migrations"
    last = migrations_write(database, fresh=False)
    previous = next(package.glob(f"{last:04d}_*.py")).stem
    number = last + 1
    name = f"{number:04d}_column_{number}"
    (package / f"{name}.py").write_text(
        "from django.db import migrations, models\n\n\n"
        "class Migration(migrations.Migration):\n"
        f'    dependencies = [("benchtenant", "{previous}")]\n'
        "    operations = [\n"
        f'        migrations.AddField(model_name="note", name="c{number}", field=models.IntegerField(null=True)),\n'
        "        migrations.AddIndex(\n"
        f'            model_name="note", index=models.Index(fields=["c{number}"], name="benchtenant_note_c{number}")\n'
        "        ),\n"
        "    ]\n"
    )
    return f"benchtenant.{name}"


def environment(database: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["DJANGO_SETTINGS_MODULE"] = "bench.tenant_settings"
    env["BENCH_TENANT_MIGRATIONS"] = str(migrations_dir(database))
    env["DATABASE_URL"] = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + database
    env["PYTHONPATH"] = str(ROOT)
    return env


def migrate_timed(database: str, *extra: str) -> tuple[float, str]:
    """`manage.py migrate` as a deploy runs it (a new process), its wall time and last line."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--jobs", str(MIGRATION_JOBS), *extra],
        cwd=ROOT,
        env=environment(database),
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    lines = [line for line in result.stdout.splitlines() if line.startswith("Organization schemas")]
    return elapsed, lines[-1] if lines else ""


_slug_counter = iter(range(10**7))
RUN = f"{int(time.time()) % 10**6:06d}"  # kept databases keep the organizations of earlier runs


def organization_timed(prefix: str) -> float:
    from apps.accounts.principals import Principal
    from apps.tenants.services import organization_create

    n = next(_slug_counter)
    started = time.perf_counter()
    organization_create(
        slug=f"{prefix}{RUN}-{n:06d}",
        name=f"Org {n}",
        owner_email=f"owner{n}@{prefix}.bench.example.com",
        actor=Principal.system("bench"),
    )
    return time.perf_counter() - started


def organizations_count() -> int:
    from apps.tenants.selectors import organization_list

    return organization_list().count()


def _build_part(arguments: tuple[str, int]) -> None:
    prefix, count = arguments
    for _ in range(count):
        organization_timed(prefix)  # each forked process has its own copy of the slug counter


def organizations_build(target: int, *, jobs: int = 2) -> None:
    """Create organizations until `target` exist, in `jobs` processes (the figures come later)."""
    from apps.tenants.connection import connections_close_before_fork

    missing = target - organizations_count()
    if missing <= 0:
        return
    connections_close_before_fork()
    parts = [(f"b{i}", missing // jobs + (1 if i < missing % jobs else 0)) for i in range(jobs)]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        pool.map(_build_part, parts)


def provisioning_print(present: int, samples: int) -> list[float]:
    timings = [organization_timed("p") for _ in range(samples)]
    print(
        f"provisioning with {present:>6,} organizations present: p50 {percentile(timings, 0.5) * 1000:6.1f} ms   "
        f"p95 {percentile(timings, 0.95) * 1000:6.1f} ms   p99 {percentile(timings, 0.99) * 1000:6.1f} ms   "
        f"(n={samples})"
    )
    return timings


READY_SCHEMAS = 3
SIGN_UPS_PER_SECOND = 1.0


def provisioning_ready_print(present: int, samples: int) -> list[float]:
    """Sign-ups offered at SIGN_UPS_PER_SECOND (open loop: each starts on its schedule) while a refill
    loop keeps READY_SCHEMAS ready, as a worker does after each sign-up. Prints how many found none
    ready and ran the script instead."""
    import threading

    from django.conf import settings
    from django.db import connection

    from apps.tenants.models import ReadySchema
    from apps.tenants.services import ready_schemas_refill

    settings.TENANT_READY_SCHEMAS = READY_SCHEMAS
    ready_schemas_refill()
    stop = threading.Event()

    def refill() -> None:
        while not stop.is_set():
            ready_schemas_refill()
            stop.wait(0.05)
        connection.close()

    refiller = threading.Thread(target=refill)
    refiller.start()
    timings: list[float] = []
    script_runs = 0
    started = time.perf_counter()
    try:
        for index in range(samples):
            time.sleep(max(0.0, started + index / SIGN_UPS_PER_SECOND - time.perf_counter()))
            script_runs += ReadySchema.objects.count() == 0  # none ready now: this one runs the script
            timings.append(organization_timed("r"))
    finally:
        stop.set()
        refiller.join()
        settings.TENANT_READY_SCHEMAS = 0
    print(
        f"provisioning from ready schemas ({READY_SCHEMAS} kept, {SIGN_UPS_PER_SECOND:g} sign-up/s offered) with "
        f"{present:>6,} organizations present: p50 {percentile(timings, 0.5) * 1000:6.1f} ms   "
        f"p95 {percentile(timings, 0.95) * 1000:6.1f} ms   p99 {percentile(timings, 0.99) * 1000:6.1f} ms   "
        f"(n={samples}; {script_runs} found none ready)"
    )
    return timings


def catalog_print(present: int) -> None:
    from django.db import connection

    from apps.tenants.models import Organization
    from apps.tenants.selectors import schema_catalog_counts

    schema = Organization.objects.exclude(schema_name="public").order_by("id").values_list("schema_name", flat=True)[0]
    counts = schema_catalog_counts(schema)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname LIKE 'benchtenant%%'",
            [schema],
        )
        bench_relations = cursor.fetchone()[0]
        cursor.execute(
            """
            SELECT sum(pg_total_relation_size(c.oid)), (SELECT count(*) FROM pg_class),
                   pg_database_size(current_database())
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pg_catalog'
            """
        )
        catalog_bytes, pg_class_rows, database_bytes = cursor.fetchone()
    shown = ", ".join(f"{counts[kind]} {kind.replace('_', ' ')}" for kind in counts if kind != "relations")
    print(
        f"catalogs per organization: {counts['relations']} relations, {bench_relations} of them the bench app's "
        f"({shown})"
    )
    print(
        f"catalogs with {present:,} organizations: {catalog_bytes / 2**20:,.0f} MB in pg_catalog, "
        f"{pg_class_rows:,} rows in pg_class, database {database_bytes / 2**30:.1f} GB"
    )


def migrations_print(database: str, present: int) -> None:
    elapsed, line = migrate_timed(database)
    print(f"no-op migrate with {present:,} organizations: {elapsed:6.1f} s   [{line}]")
    name = migration_add(database)
    elapsed, line = migrate_timed(database)
    print(
        f"migrate applying {name} (a nullable column and an index) to {present:,} organizations: "
        f"{elapsed:6.1f} s   [{line}]"
    )
    elapsed, line = migrate_timed(database, "--verify")
    print(
        f"migrate --verify (every schema's migrations read) with {present:,} organizations: {elapsed:6.1f} s   [{line}]"
    )


def bench_resolution(iterations: int, present: int) -> None:
    from django.db import connection
    from django.http import HttpRequest, HttpResponse
    from django.test import RequestFactory, override_settings

    from apps.tenants.middleware import TenantMiddleware
    from apps.tenants.models import Organization
    from apps.tenants.selectors import organization_cache_forget

    organization = Organization.objects.exclude(schema_name="public").order_by("-id").first()
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
    # Best of three rounds: the first round after the other phases ran 0.03 ms slower at any count.
    added = min(timed(with_tenancy) - timed(view) for _ in range(3))
    bypass = timed(view)
    organization_cache_forget()
    with override_settings(TENANT_RESOLUTION_CACHE_SECONDS=0):
        uncached = timed(with_tenancy)
    connection.close()
    print(
        f"tenant resolution with {present:,} organizations: added {added * 1e3:.3f} ms per request "
        f"(per-process cache, best of 3 rounds), {(uncached - bypass) * 1e3:.3f} ms without it (median of {iterations})"
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


def kept_database(count: int, *, rebuild: bool) -> None:
    """The kept database of `count` organizations, built first if needed (in this process, which
    measures nothing else: its migrations package differs from the fresh database's)."""
    database = f"{FRESH_DATABASE}_{count}"
    record = BENCH_DATA / f"{database}.json"
    fresh = rebuild or not record.exists()
    migrations_write(database, fresh=fresh)
    os.environ["BENCH_TENANT_MIGRATIONS"] = str(migrations_dir(database))
    django_on_database(database, fresh=fresh)
    if fresh:
        started = time.perf_counter()
        organizations_build(count)
        seconds = time.perf_counter() - started
        record.write_text(json.dumps({"organizations": count, "build_seconds": seconds, "built_at": time.ctime()}))
    built = json.loads(record.read_text())
    print(
        f"kept database {database}: {built['organizations']:,} organizations, built in "
        f"{built['build_seconds'] / 60:.1f} min ({built['built_at']}; 2 processes creating them)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples, 200 organizations instead of 1,000")
    parser.add_argument("--organizations", type=int, default=1000, help="the largest count measured (kept database)")
    parser.add_argument("--rebuild", action="store_true", help="build the kept database again")
    parser.add_argument("--skip-make-run", action="store_true")
    parser.add_argument("--port", type=int, default=18123)
    # The p95s at 10 (script, ready schemas), in s.
    parser.add_argument("--kept-phase", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    samples = 20 if args.quick else 50
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.tenant_settings"
    if args.kept_phase is not None:
        kept_database(args.organizations, rebuild=args.rebuild)
        organization_timed("warm")
        large = provisioning_print(organizations_count(), samples)
        large_ready = provisioning_ready_print(organizations_count(), samples)
        script_p95_at_10, ready_p95_at_10 = (float(value) for value in args.kept_phase.split(","))
        print(
            f"provisioning p95 ratio, {args.organizations:,} / 10 organizations present: "
            f"script {percentile(large, 0.95) / script_p95_at_10:.2f}, ready schemas "
            f"{percentile(large_ready, 0.95) / ready_p95_at_10:.2f}"
        )
        catalog_print(organizations_count())
        migrations_print(f"{FRESH_DATABASE}_{args.organizations}", organizations_count())
        bench_resolution(500 if args.quick else 3000, organizations_count())
        return

    middle = min(200 if args.quick else 1000, args.organizations)
    migrations_write(FRESH_DATABASE, fresh=True)
    os.environ["BENCH_TENANT_MIGRATIONS"] = str(migrations_dir(FRESH_DATABASE))
    django_on_database(FRESH_DATABASE, fresh=True)
    organization_timed("warm")  # loads the migration graph and the script; not a provisioning figure
    organizations_build(10)
    small = provisioning_print(10, samples)
    small_ready = provisioning_ready_print(10, samples)
    organizations_build(middle)
    provisioning_print(middle, samples)
    provisioning_ready_print(middle, samples)
    catalog_print(organizations_count())
    migrations_print(FRESH_DATABASE, organizations_count())
    bench_resolution(500 if args.quick else 3000, organizations_count())
    if args.organizations > middle:
        sys.stdout.flush()
        command = [sys.executable, __file__, "--organizations", str(args.organizations)]
        command += ["--kept-phase", f"{percentile(small, 0.95)},{percentile(small_ready, 0.95)}"]
        command += ["--rebuild"] if args.rebuild else []
        command += ["--quick"] if args.quick else []
        subprocess.run(command, check=True)
    if not args.skip_make_run:
        bench_make_run(args.port)


if __name__ == "__main__":
    main()
