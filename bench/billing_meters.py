"""Usage metering figures (issue 13): meter events sent per second to the fake Stripe server, and the
time to drain a backlog of ledger rows (goal: 1,000,000 rows in <= 5 minutes).

    .venv/bin/python bench/billing_meters.py [--rows 1000000] [--batch 1000]
    .venv/bin/python bench/billing.py --part meters        (the same, from the billing figures)

Seeds one metered organization's ledger with SQL generate_series (settled, platform-paid rows over
the last day), starts the fake Stripe server in a process of its own (Stripe is another machine:
its work should not share this process's interpreter), then runs the push the beat runs
(apps.billing.metering.meters_push: batches read from the ledger's partial index, sent as v2 meter
event stream requests of 100 events, four in flight, each batch's rows marked in one transaction)
until the backlog is drained, and reconciles the month (the difference must be 0).

Runs on its own database in the bench servers (.data/bench). The machine may be shared: timings
are only comparable within one run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._setup import django_on_fresh_database  # noqa: E402 - after the path is set

EVENT_NAME = "cognitionos_usage"
SECRET = "sk_test_bench"  # the fake server takes any sk_test_ key

_SEED = """
INSERT INTO {schema}.llm_usageattempt (request_id, attempt, status, created_at, settled_at, principal_kind,
    principal_id, principal_label, model_name, provider, paid_by, input_tokens, cached_input_tokens,
    output_tokens, reserved_usd, cost_usd, saved_usd, cache_layer, error_class)
SELECT md5(i::text), 1, 'succeeded', at, at, 'api_key', '1', 'bench key', 'gpt-4o-mini', 'openai', 'platform',
    100, 0, 50, 0.0004, 0.00008 + (i %% 50) * 0.00000001, 0, '', ''
FROM (SELECT i, now() - interval '1 minute' - (%(rows)s - i) * interval '1 day' / %(rows)s AS at
      FROM generate_series(1, %(rows)s) AS i) AS s
"""

_FAKE = """
import sys, time
sys.path.insert(0, sys.argv[1])
from tests.support.fake_stripe import FakeStripe
fake = FakeStripe().start()
print(fake.api_base, flush=True)
while True:
    time.sleep(3600)
"""


def fake_stripe_start() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _FAKE, str(ROOT)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout is not None
    api_base = process.stdout.readline().strip()
    if not api_base.startswith("http://"):
        process.kill()
        raise SystemExit(f"the fake Stripe server did not start ({api_base!r})")
    return process, api_base


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="ledger rows in the backlog")
    parser.add_argument("--batch", type=int, default=1000, help="rows per push batch")
    args = parser.parse_args(argv)

    os.environ.setdefault("LOG_LEVEL", "WARNING")
    from django.apps import apps

    if not apps.ready:  # run alone: a database of its own (from bench/billing.py: that one's)
        django_on_fresh_database("cognitionos_bench_meters")
    import logging

    logging.getLogger("stripe").setLevel(logging.WARNING)
    fake_process, api_base = fake_stripe_start()
    try:
        run(rows=args.rows, batch=args.batch, api_base=api_base)
    finally:
        fake_process.kill()
        fake_process.wait()


def run(*, rows: int, batch: int, api_base: str) -> None:  # noqa: PLR0915 - one linear script
    import stripe
    from django.db import connection
    from django.test import override_settings
    from django.utils import timezone
    from djstripe.models import Customer

    from apps.accounts.principals import Principal
    from apps.billing.metering import meters_push, meters_reconcile
    from apps.billing.models import OrganizationPlanPeriod, PlanVersion
    from apps.tenants.connection import tenant_connection
    from apps.tenants.models import Organization
    from apps.tenants.services import organization_create

    with override_settings(
        STRIPE_SECRET_KEY=SECRET, STRIPE_TEST_SECRET_KEY=SECRET, STRIPE_API_BASE=api_base, STRIPE_LIVE_MODE=False
    ):
        slug = f"meters-bench-{int(time.time())}"
        organization: Organization = organization_create(
            slug=slug,
            name="Meters bench",
            owner_email=f"owner@{slug}.example.com",
            plan_code="enterprise",
            actor=Principal.system("bench"),
        )
        tenant_connection().set_schema_to_public()
        enterprise = PlanVersion.objects.filter(plan__code="enterprise").order_by("-number").first()
        assert enterprise is not None
        version = PlanVersion.objects.get(pk=enterprise.pk)
        version.pk = None
        version.number = None  # type: ignore[assignment]
        version.first_used_at = None
        version.stripe_meter_event_name = EVENT_NAME
        version.save()
        OrganizationPlanPeriod.objects.filter(organization=organization).delete()
        OrganizationPlanPeriod.objects.create(
            organization=organization,
            plan_version=version,
            starts_at=timezone.now() - dt.timedelta(days=3),
            reason=OrganizationPlanPeriod.Reason.STRIPE,
        )
        client = stripe.StripeClient(SECRET, base_addresses={"api": api_base})
        client.v1.billing.meters.create(
            params={"display_name": "LLM usage", "event_name": EVENT_NAME, "default_aggregation": {"formula": "sum"}}
        )
        customer = client.v1.customers.create(params={"email": f"billing@{slug}.example.com"})
        Customer.objects.create(id=customer.id, subscriber=organization, livemode=False)

        started = time.perf_counter()
        schema = connection.ops.quote_name(organization.schema_name)
        with connection.cursor() as cursor:
            cursor.execute(_SEED.format(schema=schema), {"rows": rows})
            cursor.execute(f"ANALYZE {schema}.llm_usageattempt")
        seeded = time.perf_counter() - started
        print(f"meters: backlog of {rows:,} ledger rows seeded in {seeded:.1f} s (batch {batch} rows)")

        sent = 0
        started = time.perf_counter()
        progress_at = started
        while True:
            report = meters_push(organization=organization, batch=batch, max_rows=50_000, ignore_backoff=True)
            sent += report.sent
            if report.unavailable or report.failed:
                print(f"meters: push reported failed={report.failed} unavailable={report.unavailable}")
            if report.marked == 0:
                break
            if time.perf_counter() - progress_at > 30:
                progress_at = time.perf_counter()
                rate = sent / (progress_at - started)
                print(f"meters:   ... {sent:,} sent, {rate:,.0f} events/s")
        drained = time.perf_counter() - started
        rate = sent / drained if drained else 0.0
        print(f"meters: drained {sent:,} meter events in {drained:.1f} s: {rate:,.0f} events/s")
        if rows:
            projected = 1_000_000 / rate if rate else float("inf")
            print(
                f"meters: time to drain 1,000,000 rows: {drained if rows == 1_000_000 else projected:.0f} s "
                f"({'measured' if rows == 1_000_000 else 'projected from this rate'}; goal <= 300 s)"
            )
        tenant_connection().set_schema_to_public()
        periods = sorted({f"{timezone.now() - dt.timedelta(days=d):%Y-%m}" for d in (0, 1)})
        for period in periods:
            result = meters_reconcile(organization=organization, period=period)
            print(
                f"meters: reconcile {period}: ledger {result.ledger_units:,} sent {result.sent_units:,} "
                f"Stripe {result.stripe_units:,} (micro-cents) difference {result.difference}"
            )


if __name__ == "__main__":
    main()
