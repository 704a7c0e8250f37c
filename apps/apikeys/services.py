from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from apps.accounts.principals import Principal
from apps.apikeys.keys import key_generate, key_hash
from apps.apikeys.models import ApiKey
from apps.apikeys.selectors import apikey_cache_forget
from apps.audit.services import audit_record
from apps.tenants.models import Organization


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    key: str  # shown once; never stored


@transaction.atomic
def apikey_create(*, organization: Organization, name: str, actor: Principal) -> IssuedKey:
    prefix, secret, key = key_generate()
    api_key = ApiKey.objects.create(
        organization=organization,
        name=name.strip() or "API key",
        prefix=prefix,
        secret_hash=key_hash(secret),
        created_by_label=actor.label,
    )
    audit_record(organization=organization, actor=actor, action="apikey.created", target=api_key)
    return IssuedKey(api_key=api_key, key=key)


@transaction.atomic
def apikey_revoke(*, api_key: ApiKey, actor: Principal) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        audit_record(organization=api_key.organization, actor=actor, action="apikey.revoked", target=api_key)
        transaction.on_commit(apikey_cache_forget)
    return api_key
