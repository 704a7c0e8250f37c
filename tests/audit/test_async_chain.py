"""Asynchronous chaining: audit_record inserts events unchained, and the chainer links committed
events in id order, per organization, under the organization's lock, in short transactions."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.accounts.principals import Principal
from apps.audit.chain import GENESIS_HASH
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_chain_verify
from apps.audit.services import (
    AUDIT_CHAIN_DELAY_SECONDS,
    AUDIT_CHAIN_TASK,
    audit_chain_link,
    audit_chain_pending_key,
    audit_chain_run,
    audit_record,
)
from apps.audit.tasks import audit_chain_sweep_all, audit_chain_tenant
from apps.tenants.connection import tenant_connection
from apps.tenants.models import Organization
from cognitionos.redis import redis_client
from tests.audit.support import chained
from tests.conftest import LiveDb

ALICE = Principal(kind="user", id="42", label="alice@example.com")


def _chain_messages() -> list[tuple[Any, int]]:
    """The chainer tasks waiting in the test process's broker queue: (raw message, tenant_id)."""
    found = []
    for raw in redis_client().lrange(settings.CELERY_TASK_DEFAULT_QUEUE, 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] == AUDIT_CHAIN_TASK:
            _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
            found.append((raw, int(kwargs["tenant_id"])))
    return found


def _chain_messages_remove() -> None:
    for raw, tenant_id in _chain_messages():
        redis_client().lrem(settings.CELERY_TASK_DEFAULT_QUEUE, 0, raw)
        redis_client().delete(audit_chain_pending_key(tenant_id))


@pytest.fixture(autouse=True)
def _no_chainer_tasks_left() -> Iterator[None]:
    """Tasks these tests send stay in the broker queue (no worker here): none is left for a later
    test's workers, nor a pending flag that would stop a later test's commits from sending one (nor
    one an earlier test left, before)."""
    _chain_messages_remove()
    yield
    _chain_messages_remove()


def _verify(slug: str, *args: str) -> str:
    out = StringIO()
    call_command("audit", "verify", "--tenant", slug, *args, stdout=out)
    return out.getvalue()


def test_events_are_inserted_unchained_and_linked_in_id_order(tenant: Organization) -> None:
    chained(tenant)  # what provisioning wrote
    events = [audit_record(organization=tenant, actor=ALICE, action="probe", metadata={"n": n}) for n in range(3)]
    for event in events:  # the insert gave back the database's clock; the chain fields wait for the chainer
        assert isinstance(event.occurred_at, dt.datetime)
        assert (event.sequence, event.previous_hash, event.hash) == (None, None, None)
    stored = AuditEvent.objects.get(pk=events[0].pk)
    assert stored.occurred_at == events[0].occurred_at and stored.sequence is None

    head = AuditEvent.objects.filter(sequence__isnull=False).order_by("-sequence").first()
    linked = chained(tenant, *events)
    start = head.sequence or 0 if head else 0
    assert [event.sequence for event in linked] == [start + 1, start + 2, start + 3]
    assert linked[0].previous_hash == (head.hash if head else GENESIS_HASH)
    assert linked[1].previous_hash == linked[0].hash and linked[2].previous_hash == linked[1].hash
    assert [event.occurred_at for event in linked] == [event.occurred_at for event in events]  # hashed as stored
    report = audit_chain_verify(organization=tenant)
    assert report.ok and report.count == start + 3 and report.unchained.count == 0
    assert audit_chain_link(organization=tenant) == 0  # nothing left: a second run changes nothing


def test_only_an_unchained_events_chain_fields_may_be_set_once(tenant: Organization) -> None:
    unchained = audit_record(organization=tenant, actor=ALICE, action="probe")
    chained_event = chained(tenant, audit_record(organization=tenant, actor=ALICE, action="probe"))[0]
    fields = {"sequence": 10**9, "previous_hash": "a" * 64, "hash": "b" * 64}
    with pytest.raises(DatabaseError, match="append-only: UPDATE refused"), transaction.atomic():
        AuditEvent.objects.filter(pk=unchained.pk).update(action="tampered")
    with pytest.raises(DatabaseError, match="append-only: UPDATE refused"), transaction.atomic():
        AuditEvent.objects.filter(pk=unchained.pk).update(action="tampered", **fields)  # chaining can't carry a change
    with pytest.raises(DatabaseError, match="append-only: UPDATE refused"), transaction.atomic():
        AuditEvent.objects.filter(pk=chained_event.pk).update(**fields)  # chained once, never again
    with pytest.raises(DatabaseError, match="append-only: DELETE refused"), transaction.atomic():
        AuditEvent.objects.filter(pk=unchained.pk).delete()
    with pytest.raises(IntegrityError, match="audit_event_chained_whole"), transaction.atomic():
        AuditEvent.objects.create(actor_kind="system", actor_label="forger", action="half", sequence=10**9)
    assert AuditEvent.objects.get(pk=unchained.pk).action == "probe"


def test_events_of_a_rolled_back_transaction_are_never_chained(tenant: Organization) -> None:
    kept = audit_record(organization=tenant, actor=ALICE, action="kept")
    lost_ids: list[int] = []

    def failing_change() -> None:
        with transaction.atomic():
            lost_ids.append(audit_record(organization=tenant, actor=ALICE, action="lost").pk)
            raise RuntimeError("the change fails, and its event with it")

    with pytest.raises(RuntimeError):
        failing_change()
    after = audit_record(organization=tenant, actor=ALICE, action="after")
    kept, after = chained(tenant, kept, after)
    assert not AuditEvent.objects.filter(pk__in=lost_ids).exists()
    assert not AuditEvent.objects.filter(action="lost").exists()
    assert kept.sequence is not None
    assert after.pk > lost_ids[0] and after.sequence == kept.sequence + 1  # no hole where it was
    assert audit_chain_verify(organization=tenant).ok


def test_chaining_one_organization_never_touches_anothers(two_tenants: tuple[Organization, Organization]) -> None:
    tenant_a, tenant_b = two_tenants
    for organization in two_tenants:
        chained(organization)  # whatever earlier tests committed
    with schema_context(tenant_b.schema_name):
        head_b = AuditEvent.objects.filter(sequence__isnull=False).order_by("-sequence").first()
    events_a = [audit_record(organization=tenant_a, actor=ALICE, action="in.a") for _ in range(2)]
    events_b = [audit_record(organization=tenant_b, actor=ALICE, action="in.b") for _ in range(3)]
    assert audit_chain_link(organization=tenant_a) == 2
    assert tenant_connection().schema_name == "public"
    with schema_context(tenant_b.schema_name):
        assert (
            list(AuditEvent.objects.filter(pk__in=[e.pk for e in events_b]).values_list("sequence", flat=True))
            == [None] * 3
        )
        assert AuditEvent.objects.filter(sequence__isnull=False).order_by("-sequence").first() == head_b
    report_b = audit_chain_verify(organization=tenant_b)
    assert report_b.ok and report_b.unchained.count == 3
    with schema_context(tenant_a.schema_name):
        assert not AuditEvent.objects.filter(pk__in=[e.pk for e in events_a], sequence__isnull=True).exists()
        assert not AuditEvent.objects.filter(action="in.b").exists()
    assert audit_chain_link(organization=tenant_b) == 3 and audit_chain_verify(organization=tenant_b).ok


def test_verify_reports_events_left_unchained_too_long(tenant: Organization) -> None:
    chained(tenant)
    fresh = audit_record(organization=tenant, actor=ALICE, action="just.now")
    output = _verify(tenant.slug)
    assert output.startswith("OK: ") and "1 events not chained yet" in output
    # An event the chainer should have linked an hour ago: the chainer is stuck.
    stale = AuditEvent.objects.create(
        actor_kind="system", actor_label="system", action="old", occurred_at=timezone.now() - dt.timedelta(hours=1)
    )
    with pytest.raises(CommandError) as stuck:
        _verify(tenant.slug)
    assert stuck.value.returncode == 1
    message = str(stuck.value)
    assert "STUCK: 1 events unchained for more than 300 s (the oldest written 3600 s ago" in message
    assert f"next in line: id={min(fresh.pk, stale.pk)}): is the chainer running?" in message
    assert _verify(tenant.slug, "--unchained-max-age", "7200").startswith("OK: ")
    report = audit_chain_verify(organization=tenant, unchained_max_age=60)
    assert report.ok and report.stuck and report.unchained.count == 2 and report.unchained.stale == 1
    chained(tenant)
    assert "not chained yet" not in _verify(tenant.slug)


def test_commits_send_one_chainer_task_per_burst(tenant: Organization, django_capture_on_commit_callbacks: Any) -> None:
    pending = audit_chain_pending_key(tenant.pk)
    redis_client().delete(pending)
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        events = [audit_record(organization=tenant, actor=ALICE, action="burst") for _ in range(3)]
    assert [tenant_id for _, tenant_id in _chain_messages()] == [tenant.pk]  # one task, for this organization
    eta = json.loads(_chain_messages()[0][0])["headers"]["eta"]
    # A moment after the commit: that moment's commits share the run.
    assert dt.datetime.fromisoformat(eta) >= before + dt.timedelta(seconds=AUDIT_CHAIN_DELAY_SECONDS)
    assert 0 < redis_client().ttl(pending) <= 60
    with django_capture_on_commit_callbacks(execute=True):
        audit_record(organization=tenant, actor=ALICE, action="burst")
    assert len(_chain_messages()) == 1  # a run is already on its way: no second task

    # The task, run by the tenant task base (as a worker runs it): clears the flag, then links.
    assert audit_chain_tenant.apply(kwargs={"tenant_id": tenant.pk}).get() >= 4
    tenant_connection().set_tenant(tenant)
    assert not redis_client().exists(pending)
    assert None not in [event.sequence for event in chained(tenant, *events)]
    with django_capture_on_commit_callbacks(execute=True):
        audit_record(organization=tenant, actor=ALICE, action="later")
    assert len(_chain_messages()) == 2  # committed after the run's read: a run of its own


def test_the_sweep_runs_the_chainer_for_suspended_organizations_too(
    two_tenants: tuple[Organization, Organization],
) -> None:
    tenant_a, tenant_b = two_tenants
    Organization.objects.filter(pk=tenant_b.pk).update(status=Organization.Status.SUSPENDED)
    event = audit_record(organization=tenant_b, actor=ALICE, action="while.suspended")
    audit_chain_sweep_all()
    sent = [tenant_id for _, tenant_id in _chain_messages()]
    assert tenant_a.pk in sent and tenant_b.pk in sent
    assert audit_chain_tenant.apply(kwargs={"tenant_id": tenant_b.pk}).get() >= 1  # not refused
    assert chained(tenant_b, event)[0].sequence is not None


@pytest.mark.integration
def test_an_event_committed_late_with_a_lower_id_is_chained_after_those_already_chained(live_db: LiveDb) -> None:
    organization = live_db.organization(slug="audit-late", name="Audit late")
    inserted, release, slow_ids = threading.Event(), threading.Event(), []

    def long_transaction() -> None:
        try:
            with transaction.atomic():
                slow_ids.append(audit_record(organization=organization, actor=ALICE, action="slow").pk)
                inserted.set()
                release.wait(timeout=60)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        slow_done = pool.submit(long_transaction)
        assert inserted.wait(timeout=60)
        fast = audit_record(organization=organization, actor=ALICE, action="fast")  # commits at once
        assert fast.pk > slow_ids[0]
        assert audit_chain_link(organization=organization) == 3  # two from provisioning, and `fast`: no wait
        release.set()
        slow_done.result(timeout=60)
    assert audit_chain_link(organization=organization) == 1
    with schema_context(organization.schema_name):
        fast_row, slow_row = AuditEvent.objects.get(pk=fast.pk), AuditEvent.objects.get(pk=slow_ids[0])
    assert (fast_row.sequence, slow_row.sequence) == (3, 4)  # chain order: commit order, not id order
    assert slow_row.previous_hash == fast_row.hash
    report = audit_chain_verify(organization=organization)
    assert report.ok and report.count == 4 and report.unchained.count == 0


@pytest.mark.integration
def test_chainers_running_at_once_link_each_event_once(live_db: LiveDb) -> None:
    organization = live_db.organization(slug="audit-chainers", name="Audit chainers")
    with transaction.atomic():
        for number in range(300):
            audit_record(organization=organization, actor=ALICE, action="many", metadata={"n": number})
    barrier = threading.Barrier(3)

    def chain() -> int:
        try:
            barrier.wait(timeout=30)
            return audit_chain_link(organization=organization, batch_size=7)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=3) as pool:
        linked = [future.result(timeout=120) for future in [pool.submit(chain) for _ in range(3)]]
    assert sum(linked) == 302  # every event once, whoever linked it (the lock)
    with schema_context(organization.schema_name):
        sequences = list(AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True))
        by_id = list(AuditEvent.objects.order_by("id").values_list("sequence", flat=True))
    assert sequences == list(range(1, 303)) and by_id == sequences  # committed in id order: chained in id order
    report = audit_chain_verify(organization=organization)
    assert report.ok and report.count == 302
    assert audit_chain_run(organization=organization) == 0
