"""Deleting an organization (GDPR, issue 16): scheduled with a grace period, cancellable until then,
then purged by the beat (`organizations_purge_due`, apps.ops.tasks).

Timeline: `organization_deletion_schedule` sets status "deleting" and `deletion_due_at` (the tenant
middleware and the task base refuse a deleting organization at once: its portal, API keys and jobs
stop); `organization_deletion_cancel` restores the status it had, until the purge ran. At the due
time `organization_purge`:

1. detaches its Stripe customer (live subscriptions cancelled, the metadata naming it cleared; the
   customer and its invoices stay at Stripe as accounting records),
2. drops its schema (every tenant table: jobs, workflows, knowledge, ledger, its audit log, exports),
3. deletes its Redis key families (caches, rate limits, breakers, progress, pending chains, form
   guards, SSO replay guards, Django's tenant-prefixed cache),
4. in one transaction: deletes its dj-stripe mirror rows, its SAML accounts, revokes and deletes its
   API keys, and deletes the organization row, whose foreign keys take every public row with it
   (domains, memberships, invitations, custom roles, SSO settings and domains, plan periods,
   subscription, credits, grants, usage rollups and buckets, support grants), and records the
   operator action that remains (the platform's log keeps the slug; the organization's own audit
   log went with its schema),
5. forgets the organization in this process's caches and sweeps Redis once more.

Each step is idempotent and the order makes the purge resumable: a run interrupted anywhere is
finished by the next beat run (the organization row, which names everything to delete, goes last).
Two runs for one organization never overlap (a session advisory lock).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

from allauth.socialaccount.models import SocialAccount
from django.db import connection, transaction
from django.utils import timezone
from djstripe.models import Customer as DjstripeCustomer
from psycopg import sql

from apps.accounts.principals import Principal
from apps.apikeys.models import ApiKey
from apps.apikeys.selectors import apikey_cache_forget
from apps.audit.models import AuditEvent
from apps.audit.services import audit_record
from apps.billing import stripe_gateway
from apps.billing.stripe_models import StripeCustomer
from apps.ops.anomalies import anomalies_organization_forget
from apps.ops.services import operator_action_record
from apps.rbac.selectors import membership_cache_forget
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from cognitionos.redis import redis_client
from cognitionos.refusals import Refusal

logger = logging.getLogger(__name__)

GRACE_DAYS_MAX = 365
REASON_MAX = 1000
# First key of the purge's session advisory lock (the second is the organization's id).
PURGE_LOCK_CLASS = 0x0DE1E7E
PURGER = Principal.system("organization deletion")
SCHEDULED = "organization.deletion_scheduled"
CANCELLED = "organization.deletion_cancelled"
PURGED = "organization.purged"


class DeletionRefused(Refusal):
    http_status = 409

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


# -- schedule and cancel ------------------------------------------------------------------------------


@transaction.atomic
def organization_deletion_schedule(
    *, organization: Organization, actor: Principal, reason: str, grace_days: int = 30
) -> Organization:
    """Refuse the organization everything from now on, and delete it after `grace_days`."""
    if organization.is_public:
        raise DeletionRefused("the platform's own schema is never deleted", code="public_schema")
    if not 0 <= grace_days <= GRACE_DAYS_MAX:
        raise DeletionRefused(f"grace_days must be from 0 to {GRACE_DAYS_MAX}", code="invalid_grace_days")
    reason = reason.strip()[:REASON_MAX]
    if not reason:
        raise DeletionRefused("a deletion needs a reason", code="reason_required")
    locked = Organization.objects.select_for_update().get(pk=organization.pk)
    if locked.status == Organization.Status.DELETING:
        raise DeletionRefused(
            f"a deletion is already scheduled for {locked.deletion_due_at:%Y-%m-%d %H:%M} UTC",
            code="deletion_already_scheduled",
        )
    previous = locked.status
    locked.status = Organization.Status.DELETING
    locked.deletion_due_at = timezone.now() + dt.timedelta(days=grace_days)
    locked.save(update_fields=["status", "deletion_due_at", "updated_at"])
    audit_record(
        organization=locked,
        actor=actor,
        action=SCHEDULED,
        target=locked,
        metadata={"from": previous, "due_at": locked.deletion_due_at.isoformat(), "reason": reason},
    )
    transaction.on_commit(lambda: _caches_forget(locked))
    return locked


@transaction.atomic
def organization_deletion_cancel(*, organization: Organization, actor: Principal) -> Organization:
    """Keep the organization: back to the status it had when the deletion was scheduled (active,
    unless it was suspended or past due then), while the purge has not run."""
    locked = Organization.objects.select_for_update().filter(pk=organization.pk).first()
    if locked is None:
        raise DeletionRefused("the organization was already deleted", code="already_purged")
    if locked.status != Organization.Status.DELETING:
        raise DeletionRefused("no deletion is scheduled for this organization", code="no_deletion_scheduled")
    with organization_schema(locked):
        scheduled = (
            AuditEvent.objects.filter(action=SCHEDULED).order_by("-id").values_list("metadata", flat=True).first()
        )
    previous = (scheduled or {}).get("from", Organization.Status.ACTIVE)
    if previous not in Organization.Status.values or previous == Organization.Status.DELETING:
        previous = Organization.Status.ACTIVE
    due_at = locked.deletion_due_at
    locked.status = previous
    locked.deletion_due_at = None
    locked.save(update_fields=["status", "deletion_due_at", "updated_at"])
    audit_record(
        organization=locked,
        actor=actor,
        action=CANCELLED,
        target=locked,
        metadata={"to": previous, "was_due_at": due_at.isoformat() if due_at else None},
    )
    transaction.on_commit(lambda: _caches_forget(locked))
    return locked


def organizations_deletion_due(*, now: dt.datetime | None = None) -> list[int]:
    """Ids of the organizations whose deletion is due."""
    now = now or timezone.now()
    return list(
        Organization.objects.filter(status=Organization.Status.DELETING, deletion_due_at__lte=now)
        .exclude(schema_name="public")
        .order_by("deletion_due_at")
        .values_list("pk", flat=True)
    )


# -- the purge --------------------------------------------------------------------------------------


def _glob(value: str) -> str:
    """`value` as a literal inside a Redis SCAN pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", value)


def organization_redis_patterns(
    *, organization_id: int, schema: str, api_key_ids: list[int] | tuple[int, ...] = ()
) -> list[str]:
    """Every Redis key family that holds something of one organization (SCAN patterns). A new
    tenant-scoped key belongs here, and in tests/tenants/test_organization_deletion.py's seeds."""
    n, s = organization_id, _glob(schema)
    patterns = [
        f"{s}:*",  # Django's cache, tenant-prefixed by the key function (django_tenants.cache.make_key)
        f"*:cache:*:billing:meters:backoff:{n}",  # billing's backoff, through Django's cache
        f"llm:cache:{s}:*",  # LLM answer cache, L2 (apps.llm.caching)
        f"llm:cache-l4:{s}",  # whether its durable answer store has rows
        f"llm:rl:org:{n}:*",  # rate limits (apps.llm.ratelimits)
        f"llm:keytest:org:{n}:*",  # provider key checks per minute (apps.llm.services)
        f"llm:breaker:*:org{n}",  # breakers of its own provider keys (apps.llm.breaker)
        f"llm:breaker:*:org{n}:probe",
        f"llm:latency_ms:*@org{n}",  # health of its own provider keys (apps.llm.router)
        f"llm:error_rate:*@org{n}",
        f"audit:chain-pending:{n}",  # the chainer's pending flag (apps.audit.services)
        f"work:progress:{n}:*",  # progress notices (pub/sub channels; keys only if someone stored one)
        f"portal:job-form:{n}:*",  # the portal's double-submit guards
        f"portal:apikey-form:{n}:*",
        f"portal:webhook-*:{n}:*",
        f"rbac:invitation:resend:{n}:*",  # invitation resend limits (apps.rbac.services)
        f"rbac:invitation:resends:{n}",
        f"sso:assertion:{n}:*",  # SAML replay guard and refusal counts (apps.sso.saml)
        f"sso:refusals:{n}:*",
        f"sso:dns-checks:{n}:*",  # domain verification checks per minute (apps.sso.services)
    ]
    patterns += [f"llm:rl:key:{key_id}:*" for key_id in api_key_ids]  # its keys' rate limits
    return patterns


def organization_redis_forget(
    *, organization_id: int, schema: str, api_key_ids: list[int] | tuple[int, ...] = ()
) -> int:
    """Delete every key of the organization's families; returns how many were deleted."""
    client = redis_client()
    deleted = 0
    for pattern in organization_redis_patterns(organization_id=organization_id, schema=schema, api_key_ids=api_key_ids):
        batch: list[Any] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch = []
        if batch:
            deleted += int(client.delete(*batch))
    return deleted


def _caches_forget(organization: Organization) -> None:
    organization_cache_forget(organization)
    membership_cache_forget(organization_id=organization.pk)
    apikey_cache_forget()


def _schema_drop(schema: str) -> None:
    if schema == "public" or not schema.startswith("org_"):
        raise ValueError(f"refusing to drop schema {schema!r}: not an organization's schema")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)).as_string(connection.connection)
        )


def _stripe_detach(organization: Organization) -> dict[str, Any]:
    customer_id = (
        StripeCustomer.objects.filter(organization_id=organization.pk).values_list("customer_id", flat=True).first()
    )
    if customer_id is None:
        return {}
    if not stripe_gateway.configured():
        logger.warning("organization %s: Stripe is not configured; its customer was not detached", organization.pk)
        return {"customer_id": customer_id, "detached": False}
    return {**stripe_gateway.customer_detach(customer_id=customer_id), "detached": True}


def _lock(organization_id: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [PURGE_LOCK_CLASS, organization_id])
        row = cursor.fetchone()
    return bool(row and row[0])


def _unlock(organization_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [PURGE_LOCK_CLASS, organization_id])


def organization_purge(*, organization_id: int, now: dt.datetime | None = None) -> bool:
    """Delete everything of an organization whose deletion is due. True if it purged it now; False
    if there was nothing left to purge or another run holds it. Refuses one not scheduled or not due."""
    tenant_connection().set_schema_to_public()
    if not _lock(organization_id):
        return False
    try:
        return _purge(organization_id, now or timezone.now())
    finally:
        _unlock(organization_id)


def _purge(organization_id: int, now: dt.datetime) -> bool:
    organization = Organization.objects.filter(pk=organization_id).first()
    if organization is None:
        return False  # purged already
    if organization.is_public:
        raise DeletionRefused("the platform's own schema is never deleted", code="public_schema")
    if organization.status != Organization.Status.DELETING or organization.deletion_due_at is None:
        raise DeletionRefused(f"organization {organization.slug} is not scheduled for deletion", code="not_scheduled")
    if organization.deletion_due_at > now:
        raise DeletionRefused(f"organization {organization.slug} is due for deletion later", code="not_due")
    schema, slug = organization.schema_name, organization.slug
    key_ids = list(ApiKey.objects.filter(organization_id=organization_id).values_list("pk", flat=True))

    stripe = _stripe_detach(organization)  # outside first: a Stripe outage leaves all for the next run
    _schema_drop(schema)
    organization_redis_forget(organization_id=organization_id, schema=schema, api_key_ids=key_ids)
    # Fields of shared hashes, which no key pattern reaches.
    anomalies_organization_forget(organization_id=organization_id)

    with transaction.atomic():
        locked = Organization.objects.select_for_update().filter(pk=organization_id).first()
        if locked is None:
            return False
        customer_ids = list(
            StripeCustomer.objects.filter(organization_id=organization_id).values_list("customer_id", flat=True)
        )
        # dj-stripe's mirror of the customer (with its subscriptions, invoices...): Stripe keeps the records.
        DjstripeCustomer.objects.filter(subscriber_id=organization_id).delete()
        DjstripeCustomer.objects.filter(id__in=customer_ids).delete()
        SocialAccount.objects.filter(provider=f"saml:{slug}").delete()
        revoked = ApiKey.objects.filter(organization_id=organization_id, revoked_at__isnull=True).update(revoked_at=now)
        ApiKey.objects.filter(organization_id=organization_id).delete()
        operator_action_record(
            actor=PURGER,
            action=PURGED,
            organization=locked,
            target=f"organization {organization_id} ({slug})",
            reason="deletion due",
            metadata={
                "organization_id": organization_id,
                "slug": slug,
                "schema": schema,
                "deletion_due_at": locked.deletion_due_at.isoformat() if locked.deletion_due_at else None,
                "api_keys_revoked": revoked,
                "stripe": stripe,
            },
        )
        # Its foreign keys take every other public row with it (CASCADE); the operator log keeps the slug.
        Organization.objects.filter(pk=organization_id).delete()
        transaction.on_commit(lambda: _after_purge(locked, schema, key_ids))
    logger.info("organization %s (%s) purged", organization_id, slug)
    return True


def _after_purge(organization: Organization, schema: str, key_ids: list[int]) -> None:
    _caches_forget(organization)
    # Anything written for it while the rows went (a request that resolved it just before).
    organization_redis_forget(organization_id=organization.pk, schema=schema, api_key_ids=key_ids)
