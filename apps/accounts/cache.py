"""Django's cache key function: tenant-scoped, except for allauth's rate-limit counters."""

from __future__ import annotations

from django_tenants.cache import make_key as tenant_make_key

# allauth counts failed sign-ins and resets per client address and per account in Django's cache.
# Scoped by tenant, each organization's host would keep its own count, multiplying the attempts an
# attacker gets by the number of organizations; one count for the whole platform it is.
# The same goes for allauth's record of TOTP codes already used: kept per tenant, a code read off
# someone's phone could be replayed on another organization's host within its 30 seconds.
_GLOBAL_PREFIXES = ("allauth:rl:", "allauth.mfa.totp.used?")


def make_key(key: str, key_prefix: str, version: int | str) -> str:
    if key.startswith(_GLOBAL_PREFIXES):
        return f"global:{key_prefix}:{version}:{key}"
    return tenant_make_key(key, key_prefix, version)
