"""One answer to "may this organization do X now, and how much of it is left?".

`entitlement(organization, name)` reads the plan version that applies to the organization now —
its open plan period's version, unless a past-due subscription's grace is over or a cancelled one
has reached its period's end, which fall back to Free — and answers for one entitlement: a feature
(on or off) or a counted limit (the caller passes what is used when it counts).

It is on the gateway's hot path, so the applying version is cached per process, like tenant
resolution: an entry lives TENANT_RESOLUTION_CACHE_SECONDS at most (other processes see a change
within that), is dropped here at once by `entitlements_changed` (a plan change, a subscription
update, an operator's edit) and is recomputed as soon as the organization row it is asked with
names another plan, or the moment a grace period or a cancelled subscription's period ends.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone

from apps.billing.models import (
    FEATURES,
    FREE_PLAN_CODE,
    LIMITS,
    OrganizationPlanPeriod,
    OrganizationSubscription,
    PlanVersion,
    SubscriptionStatus,
)
from apps.billing.signals import entitlements_changed
from apps.tenants.models import Organization
from cognitionos.refusals import Refusal

# People-facing names, for refusals.
LABELS = {
    "sso": "single sign-on (SSO)",
    "custom_roles": "custom roles",
    "byok": "bring-your-own provider keys",
    "semantic_cache": "the semantic cache",
    "audit_export": "audit log export",
    "webhooks": "webhooks",
    "members": "members",
    "api_keys": "active API keys",
    "concurrent_jobs": "jobs running at once",
    "concurrent_runs": "workflow runs running at once",
    "map_items": "items per map step",
    "requests_per_minute": "requests per minute",
    "tokens_per_minute": "tokens per minute",
    "retention_days": "days of content retention",
    "included_usage": "usage a month",
    "knowledge_document_bytes": "bytes per knowledge document",
    "knowledge_chunks": "knowledge chunks stored",
}
NAMES = frozenset(FEATURES) | frozenset(LIMITS) | {"included_usage"}

FEATURE_UNAVAILABLE = "plan_feature_unavailable"
LIMIT_REACHED = "plan_limit_reached"


class UnknownEntitlement(KeyError):
    pass


@dataclass(frozen=True)
class AppliedPlan:
    """The plan version that applies to an organization now, and why."""

    version: PlanVersion
    plan_code: str
    plan_name: str
    # "" when the organization's own version applies; "past_due" (grace over) or "canceled"
    # (period ended) when Free applies instead.
    fallback: str = ""
    # The version the organization is on (its open period), even when Free applies instead.
    subscribed: PlanVersion | None = None


@dataclass(frozen=True)
class Entitlement:
    name: str
    allowed: bool
    plan: str  # the applying plan's name, for messages
    limit: int | Decimal | None = None  # None: a feature, or unlimited
    used: int | Decimal | None = None
    remaining: int | Decimal | None = None
    fallback: str = ""

    @property
    def code(self) -> str:
        return FEATURE_UNAVAILABLE if self.name in FEATURES else LIMIT_REACHED

    @property
    def status(self) -> int:
        """402 (a paid plan has it: payment required) for a missing feature; 403 for a limit reached."""
        return 402 if self.name in FEATURES else 403

    @property
    def message(self) -> str:
        label = LABELS.get(self.name, self.name)
        why = {
            "past_due": " (payment is past due and its grace period is over, so Free's limits apply)",
            "canceled": " (the subscription was cancelled, so Free's limits apply)",
        }.get(self.fallback, "")
        if self.name in FEATURES:
            return f"Your plan ({self.plan}{why}) does not include {label}."
        if self.name == "retention_days":
            return f"Your plan ({self.plan}{why}) allows up to {self.limit} {label}."
        return f"Your plan ({self.plan}{why}) allows {self.limit} {label}; {self.used} in use."

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"entitlement": self.name, "plan": self.plan}
        if self.name not in FEATURES:
            out.update(limit=_plain(self.limit), used=_plain(self.used), remaining=_plain(self.remaining))
        return out


def _plain(value: int | Decimal | None) -> int | str | None:
    return str(value) if isinstance(value, Decimal) else value


class EntitlementRefused(Refusal):
    """What an organization's plan doesn't allow. Every edge renders it like any refusal (the API's
    error shape, the OpenAI shape on /v1): `http_status` 402 or 403, `code` plan_feature_unavailable
    or plan_limit_reached, `details` naming the entitlement; portal pages show the message with a
    link to the plan page."""

    def __init__(self, entitlement: Entitlement) -> None:
        self.entitlement = entitlement
        self.name = entitlement.name
        self.http_status = entitlement.status
        self.code = entitlement.code
        self.details = entitlement.details()
        self.message = entitlement.message
        super().__init__(entitlement.message)


# organization id -> (expires at (monotonic), the plan id it was computed for, AppliedPlan)
_CACHE: dict[int, tuple[float, tuple[int, str], AppliedPlan]] = {}
_CACHE_MAX_ENTRIES = 10_000
_FREE: list[PlanVersion] = []


def entitlement_cache_forget(organization: Organization | None = None, **_: Any) -> None:
    """Drop this process's cached plans (of one organization, or all)."""
    if organization is None:
        _CACHE.clear()
        _FREE.clear()
    else:
        _CACHE.pop(organization.pk, None)


entitlements_changed.connect(entitlement_cache_forget, dispatch_uid="billing.entitlement_cache_forget")


def _free_version() -> PlanVersion:
    if not _FREE:
        found = PlanVersion.objects.select_related("plan").filter(plan__code=FREE_PLAN_CODE).order_by("-number").first()
        if found is None:
            raise LookupError("the Free plan has no version")
        _FREE.append(found)
    return _FREE[0]


def _subscribed_version(organization: Organization) -> PlanVersion:
    period = (
        OrganizationPlanPeriod.objects.select_related("plan_version__plan")
        .filter(organization_id=organization.pk, ends_at__isnull=True)
        .first()
    )
    # The organization's row names its plan; the period names the version. A row changed without a
    # period (not yet saved, or saved before the receiver rolled it) gets its plan's newest version.
    if period is not None and period.plan_version.plan_id == organization.plan_id:
        return period.plan_version
    # No period yet (an organization created before its first was opened): its plan's newest version.
    version = (
        PlanVersion.objects.select_related("plan").filter(plan_id=organization.plan_id).order_by("-number").first()
    )
    if version is None:
        raise LookupError(f"plan {organization.plan_id} has no version")
    return version


def applied_plan_compute(organization: Organization, *, now: dt.datetime | None = None) -> tuple[AppliedPlan, float]:
    """The applying plan, uncached, and for how many seconds from now the answer holds at most
    (a grace period or a cancelled period ending sooner than the cache's lifetime)."""
    now = now or timezone.now()
    version = _subscribed_version(organization)
    subscription = OrganizationSubscription.objects.filter(organization_id=organization.pk).first()
    holds = float("inf")
    fallback = ""
    if version.plan.code != FREE_PLAN_CODE and subscription is not None:
        past_due = subscription.status in (SubscriptionStatus.PAST_DUE, SubscriptionStatus.UNPAID) or (
            organization.status == Organization.Status.PAST_DUE
        )
        if past_due:
            until = subscription.grace_until or (
                (subscription.past_due_since or subscription.updated_at)
                + dt.timedelta(days=version.past_due_grace_days)
            )
            if now >= until:
                fallback = "past_due"
            else:
                holds = (until - now).total_seconds()
        ended = subscription.current_period_end is not None and now >= subscription.current_period_end
        if subscription.status == SubscriptionStatus.CANCELED or (subscription.cancel_at_period_end and ended):
            fallback = fallback or "canceled"
        elif subscription.cancel_at_period_end and subscription.current_period_end is not None:
            holds = min(holds, (subscription.current_period_end - now).total_seconds())
    if fallback:
        free = _free_version()
        return AppliedPlan(free, free.plan.code, free.plan.name, fallback=fallback, subscribed=version), holds
    return AppliedPlan(version, version.plan.code, version.plan.name, subscribed=version), holds


def applied_plan(organization: Organization) -> AppliedPlan:
    """The plan version that applies to the organization now (cached per process)."""
    now = time.monotonic()
    entry = _CACHE.get(organization.pk)
    if entry is not None and entry[0] > now and entry[1] == (organization.plan_id, organization.status):
        return entry[2]
    applied, holds = applied_plan_compute(organization)
    ttl = min(float(settings.TENANT_RESOLUTION_CACHE_SECONDS), holds)
    if ttl > 0:
        if len(_CACHE) >= _CACHE_MAX_ENTRIES:
            _CACHE.clear()
        _CACHE[organization.pk] = (now + ttl, (organization.plan_id, organization.status), applied)
    return applied


def entitlement(
    organization: Organization, name: str, *, used: int | Decimal | None = None, adding: int | Decimal = 1
) -> Entitlement:
    """May the organization do `name` now, and how much of it is left?

    A feature: allowed when its plan includes it. A limit: its value (None: unlimited); with `used`
    (what the caller counted), allowed when `used + adding` stays within it. `retention_days`:
    `used` is the retention asked for, allowed within the plan's range."""
    applied = applied_plan(organization)
    version = applied.version
    if name in FEATURES:
        return Entitlement(name, bool(getattr(version, name)), applied.plan_name, fallback=applied.fallback)
    if name == "included_usage":
        limit: int | Decimal | None = version.included_usage_usd
        if version.overage_allowed:
            # Usage past what is included is billed, never refused.
            return Entitlement(name, True, applied.plan_name, limit=limit, used=used, fallback=applied.fallback)
    elif name in LIMITS:
        limit = getattr(version, LIMITS[name])
    else:
        raise UnknownEntitlement(name)
    if name == "retention_days":
        allowed = used is None or version.min_retention_days <= used <= version.max_retention_days
        return Entitlement(name, allowed, applied.plan_name, limit=limit, used=used, fallback=applied.fallback)
    if limit is None or used is None:
        return Entitlement(name, True, applied.plan_name, limit=limit, used=used, fallback=applied.fallback)
    remaining = max(limit - used, 0)
    return Entitlement(
        name,
        used + adding <= limit,
        applied.plan_name,
        limit=limit,
        used=used,
        remaining=remaining,
        fallback=applied.fallback,
    )


def entitlement_require(
    organization: Organization, name: str, *, used: int | Decimal | None = None, adding: int | Decimal = 1
) -> Entitlement:
    """entitlement(), raising EntitlementRefused when it isn't allowed."""
    found = entitlement(organization, name, used=used, adding=adding)
    if not found.allowed:
        raise EntitlementRefused(found)
    return found


def plan_limit(organization: Organization, name: str) -> int:
    """A limit's value for places that only need the number (rate limits, admission caps)."""
    value = entitlement(organization, name).limit
    if value is None:
        return 2**31 - 1
    return int(value)
