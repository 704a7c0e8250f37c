from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Sequence
from decimal import Decimal
from enum import StrEnum
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.accounts.principals import Principal
from apps.audit.services import audit_record
from apps.billing.selectors import entitlement_require
from apps.llm.caching import cache_content_delete, cache_fast_layers_drop
from apps.llm.models import (
    DEFAULT_POLICIES,
    MAX_ALLOWED_MODELS,
    Budget,
    BudgetPeriod,
    BudgetScope,
    LlmSettings,
    ProviderCredential,
)
from apps.llm.platform.models import CatalogModel, Provider, UsageBucket, UsageSpan
from apps.llm.platform.selectors import catalog
from apps.llm.providers import CallContext, ProviderError, compatible_key_name, provider_for
from apps.llm.selectors import llm_settings_forget
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from cognitionos.redis import redis_client
from cognitionos.refusals import Refusal
from cognitionos.safehttp import OutboundError, OutboundRefused, outbound_url_check
from cognitionos.sealing import Sealed, current_key_id, seal, unseal


class BudgetInvalid(ValueError):
    pass


class ProviderCredentialInvalid(BudgetInvalid):
    """A provider key or base URL refused; `param` names the field at fault."""

    def __init__(self, message: str, *, param: str = "api_key") -> None:
        super().__init__(message)
        self.param = param


class BudgetSetByPlan(BudgetInvalid, Refusal):
    """The platform's plan budget (scope `plan`): the organization can't remove or change it."""

    http_status = 403
    code = "budget_set_by_plan"


class SettingsInvalid(ValueError):
    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@transaction.atomic
def budget_set(
    *,
    organization: Organization,
    scope: str,
    scope_id: str = "",
    period: str,
    limit_usd: Decimal,
    soft_percent: int | None = None,
    hard: bool = True,
    actor: Principal,
) -> Budget:
    """Create or change the budget of a scope and period (the connection is on the organization)."""
    if scope not in BudgetScope.values:
        raise BudgetInvalid(f"scope must be one of {', '.join(BudgetScope.values)}")
    if period not in BudgetPeriod.values:
        raise BudgetInvalid(f"period must be one of {', '.join(BudgetPeriod.values)}")
    if scope == BudgetScope.ORGANIZATION:
        scope_id = ""
    elif not scope_id:
        raise BudgetInvalid(f"a {scope} budget needs the {scope}'s id")
    if not limit_usd.is_finite() or limit_usd < 0:
        raise BudgetInvalid("the limit must be a non-negative amount of USD")
    if soft_percent is not None and not 1 <= soft_percent <= 100:
        raise BudgetInvalid("the soft limit is a percentage from 1 to 100")
    with organization_schema(organization):
        return _budget_store(
            organization=organization,
            scope=scope,
            scope_id=scope_id,
            period=period,
            limit_usd=limit_usd,
            soft_percent=soft_percent,
            hard=hard,
            actor=actor,
        )


@transaction.atomic
def budget_delete(*, organization: Organization, budget: Budget, actor: Principal) -> None:
    """Remove a budget: calls are no longer held against it (open holds go with it)."""
    if budget.scope not in BudgetScope.values:
        # The platform's plan budget (apps.llm.plan_budget) follows the plan, not the organization.
        raise BudgetSetByPlan("this budget is the plan's included usage: change the plan instead")
    audit_record(
        organization=organization,
        actor=actor,
        action="budget.deleted",
        target=budget,
        metadata={"scope": budget.scope, "scope_id": budget.scope_id, "period": budget.period},
    )
    budget.delete()


def _budget_store(
    *,
    organization: Organization,
    scope: str,
    scope_id: str,
    period: str,
    limit_usd: Decimal,
    soft_percent: int | None,
    hard: bool,
    actor: Principal,
) -> Budget:
    budget, created = Budget.objects.update_or_create(
        scope=scope,
        scope_id=scope_id,
        period=period,
        defaults={"limit_usd": limit_usd, "soft_percent": soft_percent, "hard": hard},
    )
    audit_record(
        organization=organization,
        actor=actor,
        action="budget.created" if created else "budget.changed",
        target=budget,
        metadata={
            "scope": scope,
            "scope_id": scope_id,
            "period": period,
            "limit_usd": str(limit_usd),
            "soft_percent": soft_percent,
            "hard": hard,
        },
    )
    return budget


def _credential_context(organization: Organization, provider: str) -> str:
    return f"{organization.schema_name}:{provider}"


OWN_KEY_PROVIDERS = (Provider.OPENAI, Provider.ANTHROPIC, Provider.OPENAI_COMPATIBLE)
_KEY_MAX_LENGTH = 500


def provider_base_url_validate(base_url: str) -> str:
    """An OpenAI-compatible server's base URL, stripped, if keys may be sent there: http(s), a host,
    no credentials or fragment, and a public address (unless OUTBOUND_ALLOW_PRIVATE_NETWORKS), the
    rules outgoing webhooks follow. Resolves the host name."""
    url = base_url.strip()
    if not url:
        raise ProviderCredentialInvalid("an OpenAI-compatible key needs its server's base URL", param="base_url")
    if len(url) > 2000:
        raise ProviderCredentialInvalid("the URL is longer than 2000 characters", param="base_url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProviderCredentialInvalid(
            "the base URL must start with https:// (or http://) and a host", param="base_url"
        )
    # The URL is shown on the page and kept in the audit log: no secret may ride in it.
    if parts.username is not None or parts.password is not None or parts.fragment or parts.query:
        raise ProviderCredentialInvalid(
            "the base URL must not carry credentials, a ?query or a #fragment (the key goes in the key field)",
            param="base_url",
        )
    try:
        outbound_url_check(url)
    except OutboundRefused as exc:
        raise ProviderCredentialInvalid(f"keys can't be sent to this URL: {exc}", param="base_url") from exc
    except OutboundError as exc:
        raise ProviderCredentialInvalid(f"this URL can't be reached: {exc}", param="base_url") from exc
    return url


def provider_credential_set(
    *, organization: Organization, provider: str, api_key: str, actor: Principal, base_url: str = ""
) -> ProviderCredential:
    """Store the organization's own key for a provider, encrypted, or replace the one it has (a
    rotation: the old key is gone at once). Only the last four characters are kept in clear."""
    entitlement_require(organization, "byok")
    if provider not in OWN_KEY_PROVIDERS:
        raise ProviderCredentialInvalid(
            f"own keys are supported for {', '.join(OWN_KEY_PROVIDERS)}, not {provider!r}", param="provider"
        )
    api_key = api_key.strip()
    if len(api_key) < 8 or len(api_key) > _KEY_MAX_LENGTH or any(c.isspace() for c in api_key):
        raise ProviderCredentialInvalid("that does not look like a provider key (8 to 500 characters, no spaces)")
    base_url = provider_base_url_validate(base_url) if provider == Provider.OPENAI_COMPATIBLE else ""
    sealed = seal(api_key, context=_credential_context(organization, provider))
    with organization_schema(organization), transaction.atomic():
        credential, created = ProviderCredential.objects.update_or_create(
            provider=provider,
            defaults={
                "key_id": sealed.key_id,
                "nonce": sealed.nonce,
                "ciphertext": sealed.ciphertext,
                "hint": api_key[-4:],
                "base_url": base_url,
                "created_by_label": actor.label,
            },
        )
        audit_record(
            organization=organization,
            actor=actor,
            action="provider_credential.set",
            target=credential,
            metadata={"provider": provider, "hint": credential.hint, "replaced": not created, "base_url": base_url},
        )
        transaction.on_commit(provider_own_keys_forget)
    provider_own_keys_forget()  # this process at once; others within _OWN_KEYS_SECONDS
    return credential


def provider_credential_delete(*, organization: Organization, provider: str, actor: Principal) -> None:
    """Remove the organization's own key for a provider: its calls go back to the platform's key."""
    with organization_schema(organization), transaction.atomic():
        credential = ProviderCredential.objects.select_for_update().get(provider=provider)
        audit_record(
            organization=organization,
            actor=actor,
            action="provider_credential.deleted",
            target=credential,
            metadata={"provider": provider, "hint": credential.hint},
        )
        credential.delete()
        transaction.on_commit(provider_own_keys_forget)
    provider_own_keys_forget()


class KeyCheck(StrEnum):
    WORKS = "works"
    REFUSED = "refused: invalid key"
    UNREACHABLE = "provider unreachable"
    FAILED = "the provider answered with an error"
    LIMITED = "too many tests: try again in a minute"


# What the test call asks for when the catalog has no model of the provider.
_CHECK_MODELS: dict[str, str] = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest"}
KEY_CHECK_TIMEOUT_S = 10.0
# Each test is a real call billed to the key's owner: an organization gets this many a minute.
KEY_CHECKS_PER_MINUTE = 10


def _key_check_admitted(organization: Organization) -> bool:
    counter = f"llm:keytest:org:{organization.pk}:{int(time.time() // 60)}"
    pipe = redis_client().pipeline(transaction=False)
    pipe.incr(counter)
    pipe.expire(counter, 120)
    taken, _ = pipe.execute()
    return int(taken) <= KEY_CHECKS_PER_MINUTE


def _check_model(provider: str, base_url: str) -> CatalogModel:
    """A catalog model of the provider to send the one-token call to (the cheapest listed; for an
    OpenAI-compatible server one at this base URL first), unsaved, pointed at the key's server."""
    entries = [entry for entry in catalog().values() if entry.model.provider == provider and entry.model.kind == "chat"]
    entries.sort(key=lambda e: (e.model.base_url != base_url, e.price.input_per_mtok if e.price else 0))
    name = entries[0].model.provider_model if entries else _CHECK_MODELS.get(provider, "default")
    return CatalogModel(
        name=name, provider=provider, provider_model=name, base_url=base_url, context_window=1, max_output_tokens=1,
        quality_tier=1,
    )  # fmt: skip


def provider_credential_test(*, organization: Organization, provider: str, actor: Principal) -> KeyCheck:
    """One real, one-token call to the provider with the organization's stored key, to say whether
    it works. Not governed: no budget is held or ledger row written (the provider may bill its
    owner the token); audited, with the result and never the key."""
    with organization_schema(organization):
        credential = ProviderCredential.objects.get(provider=provider)
    if not _key_check_admitted(organization):
        return KeyCheck.LIMITED
    api_key = unseal(
        Sealed(credential.key_id, bytes(credential.nonce), bytes(credential.ciphertext)),
        context=_credential_context(organization, provider),
    )
    result = KeyCheck.WORKS
    try:
        if credential.base_url:
            outbound_url_check(credential.base_url)  # the address may have changed since it was saved
        adapter = provider_for(_check_model(provider, credential.base_url), api_key)
        adapter.complete(
            {"messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 1},
            CallContext(request_id=f"keytest-{uuid.uuid4().hex}", attempt=1, timeout_s=KEY_CHECK_TIMEOUT_S),
        )
    except (OutboundRefused, OutboundError):
        result = KeyCheck.UNREACHABLE
    except ProviderError as exc:
        if exc.status in (401, 403):
            result = KeyCheck.REFUSED
        elif exc.status is None or exc.provider_side:
            result = KeyCheck.UNREACHABLE
        else:
            result = KeyCheck.FAILED
    audit_record(
        organization=organization,
        actor=actor,
        action="provider_credential.tested",
        target=credential,
        metadata={"provider": provider, "hint": credential.hint, "result": result.value},
    )
    return result


_OWN_KEYS: dict[str, tuple[float, dict[str, str]]] = {}
_OWN_KEYS_SECONDS = 10.0


def provider_own_keys(*, organization: Organization) -> dict[str, str]:
    """The organization's own provider keys, decrypted, by provider (kept per process for 10 s)."""
    now = time.monotonic()
    cached = _OWN_KEYS.get(organization.schema_name)
    if cached is not None and cached[0] > now:
        return cached[1]
    with organization_schema(organization):
        credentials = list(ProviderCredential.objects.all())
    # An OpenAI-compatible key is named by its server: it serves only the catalog's models at that
    # base URL (providers.own_key_name), never another compatible deployment.
    keys = {
        (compatible_key_name(c.base_url) if c.provider == Provider.OPENAI_COMPATIBLE else c.provider): unseal(
            Sealed(c.key_id, bytes(c.nonce), bytes(c.ciphertext)), context=_credential_context(organization, c.provider)
        )
        for c in credentials
    }
    _OWN_KEYS[organization.schema_name] = (now + _OWN_KEYS_SECONDS, keys)
    return keys


def provider_own_keys_forget() -> None:
    _OWN_KEYS.clear()


def provider_credentials_rotate(*, organization: Organization) -> int:
    """Re-encrypt the organization's credentials under the current key. Returns how many changed."""
    changed = 0
    with organization_schema(organization), transaction.atomic():
        for credential in ProviderCredential.objects.select_for_update().exclude(key_id=current_key_id()):
            context = _credential_context(organization, credential.provider)
            plaintext = unseal(
                Sealed(credential.key_id, bytes(credential.nonce), bytes(credential.ciphertext)), context=context
            )
            sealed = seal(plaintext, context=context)
            credential.key_id, credential.nonce, credential.ciphertext = sealed.key_id, sealed.nonce, sealed.ciphertext
            credential.save(update_fields=["key_id", "nonce", "ciphertext", "updated_at"])
            changed += 1
    return changed


def llm_settings_set(
    *,
    organization: Organization,
    actor: Principal,
    semantic_cache: bool | None = None,
    semantic_threshold: float | None = None,
    store_content: bool | None = None,
    retention_days: int | None = None,
    allowed_models: Sequence[str] | None = None,
    default_policy: str | None = None,
) -> LlmSettings:
    """Change the organization's engine settings (None: leave as is). Turning content off deletes
    every stored answer of the organization at once; shortening the retention deletes what is now
    too old and caps what stays at the new retention (the sweeper keeps it so afterwards). Every
    change makes a new content generation: each process's L1 stops serving answers stored under
    the earlier settings as soon as its settings cache renews (SETTINGS_CACHE_SECONDS)."""
    if semantic_threshold is not None and not 0.8 <= semantic_threshold <= 1:
        raise SettingsInvalid("the semantic threshold is a cosine similarity from 0.8 to 1", param="semantic_threshold")
    if retention_days is not None and not 1 <= retention_days <= 3650:
        raise SettingsInvalid("the retention is from 1 to 3650 days", param="retention_days")
    if retention_days is not None:
        entitlement_require(organization, "retention_days", used=retention_days)
    if semantic_cache:
        entitlement_require(organization, "semantic_cache")
    if default_policy is not None and default_policy not in ("", *DEFAULT_POLICIES):
        raise SettingsInvalid(f"the default policy is one of {', '.join(DEFAULT_POLICIES)}", param="default_policy")
    if allowed_models is not None:
        allowed_models = sorted(set(allowed_models))
        if len(allowed_models) > MAX_ALLOWED_MODELS:
            raise SettingsInvalid(f"at most {MAX_ALLOWED_MODELS} allowed models", param="allowed_models")
        unknown = [name for name in allowed_models if name not in catalog()]
        if unknown:
            raise SettingsInvalid(f"no such model: {', '.join(unknown[:5])}", param="allowed_models")
    changes: dict[str, object] = {
        name: value
        for name, value in (
            ("semantic_cache", semantic_cache),
            ("semantic_threshold", semantic_threshold),
            ("store_content", store_content),
            ("retention_days", retention_days),
            ("allowed_models", allowed_models),
            ("default_policy", default_policy),
        )
        if value is not None
    }
    with organization_schema(organization), transaction.atomic():
        current, _ = LlmSettings.objects.select_for_update().get_or_create(pk=1)
        before = {name: getattr(current, name) for name in changes}
        for name, value in changes.items():
            setattr(current, name, value)
        current.updated_by_label = actor.label
        current.save()
        if not current.store_content:
            cache_content_delete(schema=organization.schema_name)
        elif retention_days is not None and retention_days < before["retention_days"]:
            cache_content_delete(
                schema=organization.schema_name, created_before=timezone.now() - dt.timedelta(days=retention_days)
            )
            # L2 entries carry their TTL from the longer retention: dropped, L4 refills them.
            cache_fast_layers_drop(schema=organization.schema_name)
        audit_record(
            organization=organization,
            actor=actor,
            action="llm_settings.changed",
            target=current,
            metadata={"before": before, "after": changes},
        )
        transaction.on_commit(llm_settings_forget)
    llm_settings_forget()
    return current


def llm_content_sweep(*, organization: Organization) -> int:
    """Delete the organization's stored answers that are expired or older than its retention
    (all of them in no-content mode). Returns how many durable rows went."""
    with organization_schema(organization):
        current = LlmSettings.objects.filter(pk=1).first() or LlmSettings()
        if not current.store_content:
            return cache_content_delete(schema=organization.schema_name)
        return cache_content_delete(
            schema=organization.schema_name,
            created_before=timezone.now() - dt.timedelta(days=current.retention_days),
        )


def usage_hours_prune(*, now: dt.datetime | None = None, batch: int = 10_000) -> int:
    """Delete hour buckets of usage older than USAGE_HOUR_BUCKETS_DAYS, every organization's, in
    batches (only the dashboard's short ranges read hours; the day buckets stay). Returns how many."""
    cutoff = (now or timezone.now()) - dt.timedelta(days=settings.USAGE_HOUR_BUCKETS_DAYS)
    old = UsageBucket.objects.filter(span__in=[UsageSpan.HOUR, UsageSpan.HOUR_TOTAL], start__lt=cutoff)
    deleted = 0
    while ids := list(old.values_list("pk", flat=True)[:batch]):
        deleted += UsageBucket.objects.filter(pk__in=ids).delete()[0]
    return deleted


# --- Operator actions on deployments (a provider and a catalog model), shared by every tenant -----
# Callers outside apps.llm reach these through apps.llm.calls. The platform's operator log
# (apps.ops.services.operator_action_record) is written by the caller: apps.llm sits below apps.ops.
# Breaker state lives in Redis (apps.llm.breaker), shared by every process and organization.

logger = logging.getLogger(__name__)


class DeploymentUnknown(LookupError):
    """No catalog model of that provider and name."""


def _deployment_get(*, provider: str, model: str) -> CatalogModel:
    found = CatalogModel.objects.filter(provider=provider, name=model).first()
    if found is None:
        raise DeploymentUnknown(f"no deployment {provider}/{model}")
    return found


def deployment_breaker_reset(*, provider: str, model: str, actor: Principal, reason: str = "") -> None:
    """Close the platform breaker of a deployment now (its failure count and half-open probe go too)."""
    from apps.llm.breaker import breaker_key
    from apps.llm.metrics import BREAKER_OPEN

    deployment = _deployment_get(provider=provider, model=model)
    key = breaker_key(deployment.provider, deployment.name)
    redis_client().delete(key, f"{key}:probe")
    BREAKER_OPEN.labels(deployment.provider, deployment.name).set(0)
    logger.info(
        "deployment breaker reset",
        extra={"provider": provider, "model": model, "actor": actor.label, "reason": reason[:200]},
    )


def deployment_breaker_open(*, provider: str, model: str, actor: Principal, reason: str) -> None:
    """Open the platform breaker of a deployment now: calls skip it (falling back) for the cooldown
    (LLM_BREAKER_COOLDOWN_S), after which one probe call decides, as after provider failures."""
    from apps.llm.breaker import OPENED_AT, breaker_key
    from apps.llm.metrics import BREAKER_OPEN

    deployment = _deployment_get(provider=provider, model=model)
    key = breaker_key(deployment.provider, deployment.name)
    client = redis_client()
    pipe = client.pipeline(transaction=True)
    pipe.hset(key, mapping={"failures": settings.LLM_BREAKER_FAILURES, OPENED_AT: str(time.time())})
    pipe.expire(key, 24 * 3600)
    pipe.delete(f"{key}:probe")
    pipe.execute()
    BREAKER_OPEN.labels(deployment.provider, deployment.name).set(1)
    logger.info(
        "deployment breaker opened",
        extra={"provider": provider, "model": model, "actor": actor.label, "reason": reason[:200]},
    )


@transaction.atomic
def deployment_enabled_set(*, provider: str, model: str, enabled: bool, actor: Principal, reason: str) -> None:
    """Take a deployment out of routing (`enabled=False`) or put it back. A disabled model leaves the
    catalog the engine reads (`CatalogModel.is_active`): routing policies and fallback chains skip
    it, and a call naming it is refused as an unknown model. Other processes see the change within
    their catalog snapshot's lifetime (10 s)."""
    from apps.llm.platform.selectors import catalog_forget

    deployment = _deployment_get(provider=provider, model=model)
    if deployment.is_active != enabled:
        CatalogModel.objects.filter(pk=deployment.pk).update(is_active=enabled)
    transaction.on_commit(catalog_forget)
    logger.info(
        "deployment %s",
        "enabled" if enabled else "disabled",
        extra={"provider": provider, "model": model, "actor": actor.label, "reason": reason[:200]},
    )
