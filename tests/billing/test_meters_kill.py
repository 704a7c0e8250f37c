"""A meter push killed with SIGKILL in the middle of its batches, then resumed: every billable row
reaches Stripe once, and the reconciliation reports no difference."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import pytest
from django.core.cache import cache
from django.test import override_settings
from django.utils import timezone
from djstripe.models import Customer

from apps.billing.metering import meters_push, meters_reconcile
from apps.billing.models import OrganizationPlanPeriod, PlanVersion
from tests.billing.meters_support import (
    UNITS,
    fake_units,
    ledger_add,
    make_metered,
    meter_create,
    metered_plan_version,
    unmetered_count,
)
from tests.conftest import LiveDb
from tests.support.fake_stripe import FakeStripe
from tests.support.processes import ROOT, database_url_for_subprocess

pytestmark = pytest.mark.integration

ROWS = 4000


def _push_process(slug: str, fake: FakeStripe) -> subprocess.Popen[str]:
    """`cognitionos billing meter-push` as an operator (or the beat's task) runs it, on the test
    database, talking to the fake Stripe."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "DJANGO_SETTINGS_MODULE": "cognitionos.settings.development",
        "STRIPE_SECRET_KEY": "sk_test_cognitionos",
        "STRIPE_API_BASE": fake.api_base,
        "STRIPE_MAX_NETWORK_RETRIES": "2",
    }
    return subprocess.Popen(
        [sys.executable, "-c", "from cognitionos.cli import main; main()", "billing", "meter-push", "--tenant", slug],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_a_push_killed_mid_batch_resumes_without_loss_or_double_billing(live_db: LiveDb) -> None:
    now = timezone.now()
    organization = live_db.organization(slug="meters-kill")
    version: PlanVersion | None = None
    with (
        FakeStripe() as fake,
        override_settings(
            STRIPE_SECRET_KEY="sk_test_cognitionos",
            STRIPE_TEST_SECRET_KEY="sk_test_cognitionos",
            STRIPE_API_BASE=fake.api_base,
            STRIPE_MAX_NETWORK_RETRIES=2,
        ),
    ):
        try:
            meter_create(fake)
            version = metered_plan_version()
            customer = make_metered(organization, fake, version=version, since=now - dt.timedelta(days=2))
            ledger_add(organization, ROWS, at=now - dt.timedelta(minutes=3))

            process = _push_process(organization.slug, fake)
            deadline = time.monotonic() + 120
            # Kill it once Stripe has some of the events but not all (between two of its batches or
            # in the middle of one: either way rows Stripe has may not be marked yet).
            while len(fake.meter_events) < 300:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the push sent nothing"
                time.sleep(0.005)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            assert process.returncode == -signal.SIGKILL

            in_stripe = len(fake.meter_events)
            marked = ROWS - unmetered_count(organization)
            assert in_stripe < ROWS, "the push finished before it was killed; nothing was interrupted"
            assert marked <= in_stripe  # a row is marked only after Stripe accepted it

            cache.delete(f"billing:meters:backoff:{organization.pk}")
            resumed = meters_push(organization=organization, ignore_backoff=True)
            assert resumed.sent == ROWS - marked  # every unmarked row, those Stripe already had included
            assert unmetered_count(organization) == 0
            assert len(fake.meter_events) == ROWS  # the resent ones were deduplicated by identifier
            assert fake_units(fake, customer) == ROWS * UNITS

            result = meters_reconcile(organization=organization, period=f"{now - dt.timedelta(minutes=3):%Y-%m}")
            assert (result.ledger_units, result.sent_units, result.stripe_units) == (ROWS * UNITS,) * 3
            assert result.difference == 0
        finally:
            Customer.objects.filter(subscriber=organization).delete()
            OrganizationPlanPeriod.objects.filter(organization=organization).delete()
            if version is not None:
                plan = version.plan
                version.delete()
                plan.delete()
