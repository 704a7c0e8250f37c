"""Content retention per organization: answers are kept for the retention at most, and in
no-content mode nothing but counts and costs is stored."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.accounts.principals import Principal
from apps.audit.models import AuditEvent
from apps.llm import caching
from apps.llm.calls import ChatOutcome, chat_call_parse, chat_complete
from apps.llm.models import AttemptStatus, CachedResponse, SemanticCacheEntry, UsageAttempt
from apps.llm.selectors import ContentPolicy, llm_content_policy, llm_settings_forget
from apps.llm.services import SettingsInvalid, llm_content_sweep, llm_settings_set
from apps.tenants.models import Organization
from cognitionos.redis import redis_client
from tests.factories import TEST_ACTOR

PRINCIPAL = Principal(kind="api_key", id="1", label="tests")


def _ask(organization: Organization, text: str = "Hello there", **fields: Any) -> ChatOutcome:
    body = {
        "model": "simulated-mini",
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
        "cache": {"semantic": True},
        **fields,
    }
    with schema_context(organization.schema_name):
        return chat_complete(organization=organization, principal=PRINCIPAL, call=chat_call_parse(body))


def _stored(organization: Organization) -> tuple[int, int, int]:
    """Rows in L4, rows in L3, keys in L2."""
    with schema_context(organization.schema_name):
        l4, l3 = CachedResponse.objects.count(), SemanticCacheEntry.objects.count()
    l2 = len(list(redis_client().scan_iter(f"llm:cache:{organization.schema_name}:*")))
    return l4, l3, l2


def test_no_content_mode_stores_no_answer_anywhere_but_keeps_counts_and_costs(
    two_tenants: tuple[Organization, Organization],
) -> None:
    tenant_a, tenant_b = two_tenants
    llm_settings_set(organization=tenant_a, actor=TEST_ACTOR, store_content=False, semantic_cache=True)
    first, second = _ask(tenant_a), _ask(tenant_a)
    assert (first.cache, second.cache) == ("miss", "miss")
    assert _stored(tenant_a) == (0, 0, 0)
    with schema_context(tenant_a.schema_name):
        rows = list(UsageAttempt.objects.all())
    assert [r.status for r in rows] == [AttemptStatus.SUCCEEDED] * 2  # no L3 embedding either
    assert all(r.cost_usd > 0 and r.input_tokens > 0 and r.output_tokens > 0 for r in rows)
    # The other organization keeps its default: answers are cached.
    assert (_ask(tenant_b).cache, _ask(tenant_b).cache) == ("miss", "l1")
    assert _stored(tenant_b)[0] == 1 and _stored(tenant_b)[2] == 1


def test_turning_content_off_deletes_what_was_stored(two_tenants: tuple[Organization, Organization]) -> None:
    tenant_a, tenant_b = two_tenants
    for organization in two_tenants:
        llm_settings_set(organization=organization, actor=TEST_ACTOR, semantic_cache=True)
        _ask(organization)
    assert _stored(tenant_a) == (1, 1, 1)
    llm_settings_set(organization=tenant_a, actor=TEST_ACTOR, store_content=False)
    assert _stored(tenant_a) == (0, 0, 0)
    assert caching.l1.get(tenant_a.schema_name, "x") is None
    assert _stored(tenant_b) == (1, 1, 1)  # B untouched
    assert _ask(tenant_b).cache == "l1"
    llm_settings_set(organization=tenant_a, actor=TEST_ACTOR, store_content=True)
    assert _ask(tenant_a).cache == "miss"  # nothing left in any layer, this process's L1 included


def test_a_cached_answer_never_outlives_the_retention(tenant: Organization) -> None:
    llm_settings_set(organization=tenant, actor=TEST_ACTOR, retention_days=1, semantic_cache=True)
    _ask(tenant, cache={"ttl": 30 * 86400, "semantic": True})
    horizon = timezone.now() + dt.timedelta(days=1, seconds=5)
    assert CachedResponse.objects.get().expires_at <= horizon
    assert SemanticCacheEntry.objects.get().expires_at <= horizon
    (key,) = redis_client().scan_iter(f"llm:cache:{tenant.schema_name}:*")
    assert 0 < int(redis_client().ttl(key)) <= 86400


def _age(organization: Organization, days: int) -> None:
    with schema_context(organization.schema_name):
        for model in (CachedResponse, SemanticCacheEntry):
            model.objects.update(created_at=timezone.now() - dt.timedelta(days=days))


def test_the_sweeper_deletes_content_past_each_organizations_retention(
    two_tenants: tuple[Organization, Organization],
) -> None:
    tenant_a, tenant_b = two_tenants
    for organization in two_tenants:
        llm_settings_set(organization=organization, actor=TEST_ACTOR, semantic_cache=True)
        _ask(organization, "old question")
        _age(organization, days=10)
        _ask(organization, "new question")
    llm_settings_set(organization=tenant_a, actor=TEST_ACTOR, retention_days=7)  # deletes A's old rows now
    assert _stored(tenant_a)[:2] == (1, 1)
    _age(tenant_a, days=8)
    assert llm_content_sweep(organization=tenant_a) == 2
    assert _stored(tenant_a)[:2] == (0, 0)
    assert llm_content_sweep(organization=tenant_b) == 0  # B keeps 30 days
    assert _stored(tenant_b)[:2] == (2, 2)
    with schema_context(tenant_b.schema_name):
        CachedResponse.objects.filter(pk=CachedResponse.objects.order_by("pk").first().pk).update(  # type: ignore[union-attr]
            expires_at=timezone.now()
        )
    assert llm_content_sweep(organization=tenant_b) == 1  # expired answers go too
    assert _stored(tenant_b)[:2] == (1, 2)


def test_the_sweeper_empties_an_organization_in_no_content_mode(tenant: Organization) -> None:
    _ask(tenant)
    with schema_context(tenant.schema_name):
        CachedResponse.objects.create(key="y" * 64, model_name="m", response={}, expires_at=timezone.now())
    llm_settings_set(organization=tenant, actor=TEST_ACTOR, store_content=False)
    # A process that had not yet seen the change wrote an answer: the sweeper removes it.
    with schema_context(tenant.schema_name):
        CachedResponse.objects.create(
            key="x" * 64, model_name="m", response={}, expires_at=timezone.now() + dt.timedelta(days=1)
        )
    assert llm_content_sweep(organization=tenant) == 1
    assert _stored(tenant)[0] == 0


def test_content_policy_is_per_organization_and_changes_are_audited(
    two_tenants: tuple[Organization, Organization],
) -> None:
    tenant_a, tenant_b = two_tenants
    assert llm_content_policy(organization=tenant_a) == ContentPolicy(store_content=True, retention_days=30)
    llm_settings_set(organization=tenant_a, actor=TEST_ACTOR, store_content=False, retention_days=7)
    assert llm_content_policy(organization=tenant_a) == ContentPolicy(store_content=False, retention_days=7)
    assert llm_content_policy(organization=tenant_b) == ContentPolicy(store_content=True, retention_days=30)
    with schema_context(tenant_a.schema_name):
        event = AuditEvent.objects.get(action="llm_settings.changed")
    assert event.metadata["after"] == {"store_content": False, "retention_days": 7}
    with schema_context(tenant_b.schema_name):
        assert not AuditEvent.objects.filter(action="llm_settings.changed").exists()


@pytest.mark.parametrize(
    "changes",
    [{"retention_days": 0}, {"retention_days": 4000}, {"semantic_threshold": 0.5}, {"semantic_threshold": 1.1}],
)
def test_out_of_range_settings_are_refused(tenant: Organization, changes: dict[str, Any]) -> None:
    with pytest.raises(SettingsInvalid):
        llm_settings_set(organization=tenant, actor=TEST_ACTOR, **changes)


def test_the_cli_shows_and_changes_the_settings(two_tenants: tuple[Organization, Organization]) -> None:
    tenant_a, tenant_b = two_tenants
    out = io.StringIO()
    arguments = ["--tenant", tenant_a.slug, "--no-store-content", "--retention-days", "7", "--json"]
    call_command("llm", "settings", *arguments, stdout=out)
    assert json.loads(out.getvalue()) == {
        "tenant": tenant_a.slug,
        "store_content": False,
        "retention_days": 7,
        "semantic_cache": False,
        "semantic_threshold": 0.95,
    }
    llm_settings_forget()
    assert llm_content_policy(organization=tenant_a) == ContentPolicy(store_content=False, retention_days=7)
    assert llm_content_policy(organization=tenant_b).store_content is True
    out = io.StringIO()
    call_command("llm", "settings", "--tenant", tenant_a.slug, "--store-content", "--semantic-cache", stdout=out)
    assert "store_content: True" in out.getvalue() and "semantic_cache: True" in out.getvalue()
    with pytest.raises(CommandError, match=r"0\.8 to 1"):
        call_command("llm", "settings", "--tenant", tenant_a.slug, "--semantic-threshold", "0.1")
    with pytest.raises(CommandError, match="no organization"):
        call_command("llm", "settings", "--tenant", "no-such-org")


def test_the_retention_sweep_runs_on_beat_for_every_organization(settings: Any) -> None:
    import apps.llm.tasks  # noqa: F401 - registers the tasks, as the worker's autodiscovery does
    from cognitionos.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["llm-content-sweep"]
    assert entry["task"] in app.tasks and entry["schedule"] <= 24 * 3600
    assert "apps.llm.tasks.llm_content_sweep_one" in app.tasks
