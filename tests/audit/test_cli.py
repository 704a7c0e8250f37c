"""`cognitionos audit verify`, run as an operator runs it: the exit code says whether the chain holds."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django_tenants.utils import schema_context

from apps.accounts.principals import Principal
from apps.audit.models import AuditEvent
from apps.audit.services import audit_record
from tests.conftest import LiveDb
from tests.support.processes import run_cognitionos

pytestmark = pytest.mark.integration
ALICE = Principal(kind="user", id="42", label="alice@example.com")


def test_verify_exits_0_on_a_sound_chain_and_1_at_the_first_tampered_event(live_db: LiveDb) -> None:
    organization = live_db.organization(slug="audited")
    events = [audit_record(organization=organization, actor=ALICE, action="probe", metadata={"n": n}) for n in range(3)]
    linked = run_cognitionos("audit", "chain", "--tenant", "audited")  # the chainer, run by hand
    assert linked.returncode == 0 and linked.stdout.startswith("Linked "), linked.stderr
    with schema_context(organization.schema_name):
        events = [AuditEvent.objects.get(pk=event.pk) for event in events]
    sound = run_cognitionos("audit", "verify", "--tenant", "audited")
    assert sound.returncode == 0, sound.stderr
    assert sound.stdout.startswith(f"OK: 5 events, chain head 5:{events[-1].hash}")

    with transaction.atomic(), schema_context(organization.schema_name), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        AuditEvent.objects.filter(pk=events[1].pk).update(actor_label="mallory@example.com")
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")
    broken = run_cognitionos("audit", "verify", "--tenant", "audited")
    assert broken.returncode == 1
    assert f"BROKEN at event id={events[1].pk} (sequence {events[1].sequence}): its hash" in broken.stderr
    assert f"stored:   {events[1].hash}" in broken.stderr

    unknown = run_cognitionos("audit", "verify", "--tenant", "nobody-here")
    assert unknown.returncode == 2 and "no organization 'nobody-here'" in unknown.stderr
