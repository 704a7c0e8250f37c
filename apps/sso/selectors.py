"""Reads of SAML SSO that are more than a one-line query."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import QuerySet

from apps.billing.selectors import entitlement
from apps.sso.domains import email_domain
from apps.sso.models import IdentityProvider, SsoDomain
from apps.sso.saml import provider_sub_id
from apps.tenants.models import Organization

# --- Discovery, enforcement and the domains list (sso-portal) -------------------------------------


def _usable(provider: IdentityProvider | None) -> IdentityProvider | None:
    # A plan without SSO (a downgrade) stops both discovery and the requirement: its IdP can't be
    # used, so requiring it would lock every member of the domain out.
    if provider is None or not entitlement(provider.organization, "sso").allowed:
        return None
    return provider


def _providers_for_domains(domains: Iterable[str], *, required_only: bool) -> QuerySet[IdentityProvider]:
    filters = {
        "enabled": True,
        "organization__sso_domains__domain__in": list(domains),
        "organization__sso_domains__verified_at__isnull": False,
    }
    if required_only:
        filters["organization__sso_domains__require_sso"] = True
    return (
        IdentityProvider.objects.select_related("organization__plan")
        .filter(**filters)
        .exclude(organization__status=Organization.Status.DELETING)
    )


def sso_discover(*, email: str) -> IdentityProvider | None:
    """The enabled IdP of the organization that verified the email's domain (exactly that domain:
    a verified example.com does not claim eu.example.com), or None."""
    domain = email_domain(email)
    if domain is None:
        return None
    # At most one: a domain is verified by one organization (sso_domain_verified_once).
    return _usable(_providers_for_domains([domain], required_only=False).first())


def sso_required_for(*, email: str) -> IdentityProvider | None:
    """The IdP an address must sign in through (its verified domain requires SSO), or None.

    A requirement whose IdP is disabled, deleted or off the plan doesn't hold: nobody of the domain
    could sign in otherwise."""
    return sso_required_for_emails(emails=[email])


def sso_required_for_emails(*, emails: Iterable[str]) -> IdentityProvider | None:
    """As sso_required_for, for any of a person's addresses (one query)."""
    domains = {domain for domain in (email_domain(email) for email in emails) if domain}
    if not domains:
        return None
    return _usable(_providers_for_domains(domains, required_only=True).first())


def sso_domain_list(*, organization: Organization) -> QuerySet[SsoDomain]:
    return SsoDomain.objects.filter(organization=organization).order_by("domain")


def sso_provider_id(provider: IdentityProvider) -> str:
    """allauth's provider id for sign-ins through this IdP (SocialAccount.provider, and the
    `provider` of allauth's authentication record)."""
    return provider_sub_id(provider.organization)


def sso_enabled_provider(*, organization: Organization) -> IdentityProvider | None:
    """The organization's IdP when people can sign in through it now (enabled, on a plan with SSO)."""
    provider = (
        IdentityProvider.objects.select_related("organization__plan")
        .filter(organization_id=organization.pk, enabled=True)
        .first()
    )
    return _usable(provider)
