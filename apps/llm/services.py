from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from apps.accounts.principals import Principal
from apps.audit.services import audit_record
from apps.llm.caching import cache_content_delete, cache_fast_layers_drop
from apps.llm.models import Budget, BudgetPeriod, BudgetScope, LlmSettings, ProviderCredential
from apps.llm.platform.models import Provider
from apps.llm.selectors import llm_settings_forget
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from cognitionos.sealing import Sealed, current_key_id, seal, unseal


class BudgetInvalid(ValueError):
    pass


class SettingsInvalid(ValueError):
    pass


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


def provider_credential_set(
    *, organization: Organization, provider: str, api_key: str, actor: Principal
) -> ProviderCredential:
    """Store (or replace) the organization's own key for a provider, encrypted."""
    if provider not in (Provider.OPENAI, Provider.ANTHROPIC):
        raise BudgetInvalid(f"own keys are supported for openai and anthropic, not {provider!r}")
    if len(api_key.strip()) < 8:
        raise BudgetInvalid("that does not look like a provider key")
    sealed = seal(api_key.strip(), context=_credential_context(organization, provider))
    with organization_schema(organization), transaction.atomic():
        credential, _ = ProviderCredential.objects.update_or_create(
            provider=provider,
            defaults={
                "key_id": sealed.key_id,
                "nonce": sealed.nonce,
                "ciphertext": sealed.ciphertext,
                "hint": api_key.strip()[-4:],
                "created_by_label": actor.label,
            },
        )
        audit_record(
            organization=organization,
            actor=actor,
            action="provider_credential.set",
            target=credential,
            metadata={"provider": provider, "hint": credential.hint},
        )
        transaction.on_commit(provider_own_keys_forget)
    return credential


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
    keys = {
        c.provider: unseal(
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
) -> LlmSettings:
    """Change the organization's engine settings (None: leave as is). Turning content off deletes
    every stored answer of the organization at once; shortening the retention deletes what is now
    too old and caps what stays at the new retention (the sweeper keeps it so afterwards). Every
    change makes a new content generation: each process's L1 stops serving answers stored under
    the earlier settings as soon as its settings cache renews (SETTINGS_CACHE_SECONDS)."""
    if semantic_threshold is not None and not 0.8 <= semantic_threshold <= 1:
        raise SettingsInvalid("the semantic threshold is a cosine similarity from 0.8 to 1")
    if retention_days is not None and not 1 <= retention_days <= 3650:
        raise SettingsInvalid("the retention is from 1 to 3650 days")
    changes = {
        name: value
        for name, value in (
            ("semantic_cache", semantic_cache),
            ("semantic_threshold", semantic_threshold),
            ("store_content", store_content),
            ("retention_days", retention_days),
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
