"""The audit log's hash chain: each event links to the one before, and `audit verify` finds the first break."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from io import StringIO
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django_tenants.utils import schema_context

from apps.accounts.principals import Principal
from apps.audit.chain import GENESIS_HASH, event_hash
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_chain_verify
from apps.audit.selectors import audit_event_chain_fields as _chain_fields
from apps.audit.services import audit_chain_link, audit_record
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from tests.audit.support import chained
from tests.conftest import LiveDb
from tests.factories import organization_make

ALICE = Principal(kind="user", id="42", label="alice@example.com")


def _record(organization: Organization, count: int, action: str = "widget.changed") -> list[AuditEvent]:
    """`count` events, chained."""
    events = [
        audit_record(organization=organization, actor=ALICE, action=action, metadata={"n": number})
        for number in range(count)
    ]
    return chained(organization, *events)


@contextmanager
def _append_only_suspended() -> Iterator[None]:
    """What someone with the table owner's rights could do; the test's transaction rolls it back."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        yield
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")


def _verify(slug: str, *args: str) -> str:
    out = StringIO()
    call_command("audit", "verify", "--tenant", slug, *args, stdout=out)
    return out.getvalue()


def test_events_are_numbered_and_each_links_to_the_previous_hash(tenant: Organization) -> None:
    start = AuditEvent.objects.count()
    first, second, third = _record(tenant, 3)
    assert [first.sequence, second.sequence, third.sequence] == [start + 1, start + 2, start + 3]
    assert second.previous_hash == first.hash and third.previous_hash == second.hash
    chain = list(AuditEvent.objects.order_by("sequence"))
    assert chain[0].previous_hash == GENESIS_HASH
    for stored in chain:  # the hash covers what the database gives back, not what was passed in
        assert event_hash(_chain_fields(stored)) == stored.hash
    assert third.occurred_at >= second.occurred_at >= first.occurred_at


def test_metadata_that_jsonb_rewrites_still_verifies(tenant: Organization) -> None:
    awkward: dict[Any, Any] = {
        "big": 1e16,
        "huge": 1e300,
        "tiny": 1.5e-7,
        "third": 0.1,
        "negative_zero": -0.0,
        "nested": {"b": [1, 2.0, {"z": None, "a": True}], "a": "ünïcödé ✓"},
        7: "an int key",
        "tuple": (1, 2),
    }
    event = chained(tenant, audit_record(organization=tenant, actor=ALICE, action="awkward", metadata=awkward))[0]
    report = audit_chain_verify(organization=tenant)
    assert report.ok and report.count == event.sequence and report.unchained.count == 0


def test_verify_reports_ok_with_the_count(tenant: Organization) -> None:
    _record(tenant, 5)
    count = AuditEvent.objects.count()
    output = _verify(tenant.slug, "--batch-size", "2")  # several batches
    assert output.startswith(f"OK: {count} events, chain head {count}:{AuditEvent.objects.latest('sequence').hash}")


def test_a_changed_field_is_reported_at_that_exact_event(tenant: Organization) -> None:
    events = _record(tenant, 6)
    tampered = events[3]
    with _append_only_suspended():
        AuditEvent.objects.filter(pk=tampered.pk).update(metadata={"n": 999})
    report = audit_chain_verify(organization=tenant, batch_size=2)
    assert report.broken is not None
    assert (report.broken.event_id, report.broken.field, report.broken.stored) == (tampered.pk, "hash", tampered.hash)
    assert tampered.sequence is not None
    assert report.broken.expected != tampered.hash and report.count == tampered.sequence - 1
    with pytest.raises(CommandError) as failure:
        _verify(tenant.slug)
    assert failure.value.returncode == 1
    message = str(failure.value)
    assert f"event id={tampered.pk} (sequence {tampered.sequence})" in message
    assert f"stored:   {tampered.hash}" in message and f"expected: {report.broken.expected}" in message


def test_a_recomputed_hash_breaks_the_next_link(tenant: Organization) -> None:
    events = _record(tenant, 4)
    tampered = events[1]
    forged = replace(_chain_fields(tampered), action="nothing.happened")
    with _append_only_suspended():
        AuditEvent.objects.filter(pk=tampered.pk).update(action="nothing.happened", hash=event_hash(forged))
    report = audit_chain_verify(organization=tenant)
    assert report.broken is not None
    assert (report.broken.event_id, report.broken.field) == (events[2].pk, "previous_hash")
    assert (report.broken.expected, report.broken.stored) == (event_hash(forged), tampered.hash)


def test_a_removed_event_is_reported_as_a_gap(tenant: Organization) -> None:
    events = _record(tenant, 4)
    with _append_only_suspended():
        AuditEvent.objects.filter(pk=events[1].pk).delete()
    report = audit_chain_verify(organization=tenant)
    assert report.broken is not None
    assert (report.broken.event_id, report.broken.field) == (events[2].pk, "sequence")
    assert (report.broken.expected, report.broken.stored) == (str(events[1].sequence), str(events[2].sequence))


def test_anchors_catch_a_rewritten_tail_and_a_cut_off_end(tenant: Organization) -> None:
    events = _record(tenant, 4)
    head = _verify(tenant.slug).split("chain head ")[1].strip()  # kept elsewhere by the operator
    anchor = f"{events[-1].sequence}:{events[-1].hash}"
    assert head == anchor
    with _append_only_suspended():  # rewrite the last two events and recompute their hashes
        previous = events[1].hash
        for event in events[2:]:
            assert previous is not None
            fields = replace(_chain_fields(event), previous_hash=previous, actor_label="someone else")
            AuditEvent.objects.filter(pk=event.pk).update(
                actor_label="someone else", previous_hash=previous, hash=event_hash(fields)
            )
            previous = event_hash(fields)
    assert _verify(tenant.slug).startswith("OK")  # the chain alone holds together
    with pytest.raises(CommandError, match=rf"event id={events[-1].pk} .*its anchor"):
        _verify(tenant.slug, "--anchor", anchor)
    with _append_only_suspended():
        AuditEvent.objects.filter(pk__in=[events[-1].pk, events[-2].pk]).delete()
    with pytest.raises(CommandError, match=f"before anchored event {events[-1].sequence}") as cut:
        _verify(tenant.slug, "--anchor", anchor)
    assert cut.value.returncode == 1


def test_the_chain_is_enforced_by_the_database(tenant: Organization) -> None:
    event = _record(tenant, 1)[0]
    duplicate = AuditEvent(
        sequence=event.sequence,
        actor_kind="system",
        actor_label="forger",
        action="forged",
        previous_hash=event.previous_hash,
        hash=event.hash,
    )
    with pytest.raises(Exception, match="audit_event_sequence_unique"):
        duplicate.save(force_insert=True)


def test_verify_of_an_unknown_organization_exits_2(db: None) -> None:
    with pytest.raises(CommandError) as failure:
        _verify("no-such-org")
    assert failure.value.returncode == 2


def test_the_migration_chains_existing_events_as_audit_record_does(tenant: Organization) -> None:
    from importlib import import_module

    migration = import_module("apps.audit.migrations.0002_hash_chain")
    events = _record(tenant, 5)
    with _append_only_suspended():
        AuditEvent.objects.update(previous_hash="0" * 64, hash="0" * 64)
    assert not audit_chain_verify(organization=tenant).ok
    migration.chain_existing(None, SimpleNamespace(connection=connection))
    assert audit_chain_verify(organization=tenant).ok
    assert [e.hash for e in AuditEvent.objects.filter(pk__in=[e.pk for e in events]).order_by("id")] == [
        e.hash for e in events
    ]
    with pytest.raises(Exception, match="append-only"):  # and the trigger is back
        AuditEvent.objects.filter(pk=events[0].pk).update(action="x")


def test_verify_in_one_organization_ignores_the_others_writes(two_tenants: tuple[Organization, Organization]) -> None:
    tenant_a, tenant_b = two_tenants
    _record(tenant_a, 3)
    _record(tenant_b, 3)
    with schema_context(tenant_a.schema_name):
        count_a = AuditEvent.objects.count()
    with schema_context(tenant_b.schema_name), _append_only_suspended():
        AuditEvent.objects.update(action="tampered in b")
    assert audit_chain_verify(organization=tenant_a).ok and audit_chain_verify(organization=tenant_a).count == count_a
    assert not audit_chain_verify(organization=tenant_b).ok
    assert tenant_connection().schema_name == "public"


@pytest.mark.integration
def test_concurrent_writers_leave_one_unbroken_chain(live_db: LiveDb) -> None:
    organization = live_db.organization(slug="audit-race", name="Audit race")
    other = live_db.organization(slug="audit-race-other", name="Audit race other")
    writers, per_writer = 8, 15
    barrier = threading.Barrier(writers)

    def write(number: int) -> None:
        try:
            barrier.wait(timeout=30)
            for item in range(per_writer):
                # Every other writer also writes the other organization: its lock is its own.
                target = other if number % 2 and item % 3 == 0 else organization
                audit_record(organization=target, actor=ALICE, action="race", metadata={"w": number, "i": item})
        finally:
            connection.close()

    def chain_meanwhile(org: Organization) -> None:
        # Chainers run while the writers write, as the tasks scheduled on commit do.
        try:
            while not done.is_set():
                audit_chain_link(organization=org, batch_size=7)
        finally:
            connection.close()

    done = threading.Event()
    with ThreadPoolExecutor(max_workers=writers + 2) as pool:
        chainers = [pool.submit(chain_meanwhile, org) for org in (organization, other)]
        for future in [pool.submit(write, number) for number in range(writers)]:
            future.result(timeout=120)  # a writer's error fails the test here
        done.set()
        for future in chainers:
            future.result(timeout=120)
    for org in (organization, other):
        audit_chain_link(organization=org)  # what committed after the chainers' last pass
    written_other = sum(1 for number in range(writers) if number % 2 for item in range(per_writer) if item % 3 == 0)
    for org, expected in ((organization, writers * per_writer - written_other), (other, written_other)):
        with schema_context(org.schema_name):
            race = AuditEvent.objects.filter(action="race").count()
            sequences = list(AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True))
        assert race == expected
        assert sequences == list(range(1, len(sequences) + 1))
        report = audit_chain_verify(organization=org)
        assert report.ok and report.count == len(sequences)


def test_a_new_organization_cloned_from_the_template_starts_its_own_chain(db: None) -> None:
    organization = organization_make(slug="fresh-chain")
    audit_chain_link(organization=organization)
    report = audit_chain_verify(organization=organization)
    with schema_context(organization.schema_name):
        first = AuditEvent.objects.get(sequence=1)
    assert report.ok and report.count == 2 and first.previous_hash == GENESIS_HASH
    assert first.action == "organization.created"
