"""Every write of SAML SSO: identity providers, verified domains. Keyword-only, atomic, audited in
the organization's audit log."""

from __future__ import annotations

import base64
import hashlib

from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.audit.services import audit_record
from apps.billing.selectors import entitlement
from apps.rbac.models import Membership, Role
from apps.rbac.permissions import Permission, role_permissions
from apps.rbac.selectors import membership_permissions
from apps.rbac.services import membership_create
from apps.sso.domains import (
    DnsOutcome,
    DomainInvalid,
    dns_txt_check,
    domain_normalize,
    email_domain,
    verification_token_new,
)
from apps.sso.metadata import IdpMetadata, MetadataInvalid, metadata_fetch, metadata_parse
from apps.sso.models import IdentityProvider, SsoDomain
from apps.sso.saml import SamlRefused, provider_sub_id
from apps.tenants.models import Organization
from cognitionos.redis import redis_client

# --- Identity providers and the SAML sign-in (sso-core) -------------------------------------------


class IdentityProviderRefused(Exception):
    """An identity-provider change that can't be made; `code` for programs, the message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _security_actor_require(*, organization: Organization, actor: Principal) -> frozenset[str] | None:
    """The actor's permissions in the organization (None: the platform itself); refuses without
    security:manage."""
    if actor.kind == "system":
        return None
    if actor.kind in ("user", "operator") and actor.id is not None:
        # The current membership, not a request's (briefly cached) permissions.
        held = membership_permissions(user_id=int(actor.id), organization_id=organization.pk) or frozenset()
    else:
        held = actor.permissions or frozenset()
    if Permission.SECURITY_MANAGE.value not in held and Permission.ADMIN.value not in held:
        raise IdentityProviderRefused(
            "permission_denied", f"this needs the {Permission.SECURITY_MANAGE.value} permission"
        )
    return held


def _certificate_fingerprint(encoded: str) -> str:
    return hashlib.sha256(base64.b64decode(encoded)).hexdigest()


def identity_provider_configure(
    *,
    organization: Organization,
    actor: Principal,
    metadata_xml: str | None = None,
    metadata_url: str | None = None,
    enabled: bool,
    allow_idp_initiated: bool,
    default_role: str,
) -> IdentityProvider:
    """Configure (or reconfigure) the organization's SAML IdP from its metadata, pasted or fetched
    from an https URL (SSRF-safe, bounded). Without new metadata, an existing IdP keeps its own and
    only the switches and the default role change."""
    held = _security_actor_require(organization=organization, actor=actor)
    if not entitlement(organization, "sso").allowed:
        raise IdentityProviderRefused("plan_without_sso", "your plan doesn't include SSO")
    if default_role not in Role.values:
        raise IdentityProviderRefused("invalid_role", f"unknown role {default_role!r}")
    if default_role == Role.OWNER:
        raise IdentityProviderRefused("invalid_role", "people who sign in through SSO can't become owners by default")
    if held is not None and not (
        Permission.ADMIN.value in held or {p.value for p in role_permissions(default_role)} <= held
    ):
        raise IdentityProviderRefused("permission_denied", "the default role can't be above your own")
    if metadata_xml and metadata_url:
        raise IdentityProviderRefused("invalid_metadata", "give the metadata XML or its URL, not both")
    parsed: IdpMetadata | None = None
    try:
        if metadata_url:
            # Fetched before the transaction: no row lock held while another server answers.
            parsed = metadata_parse(metadata_fetch(metadata_url))
        elif metadata_xml:
            parsed = metadata_parse(metadata_xml)
    except MetadataInvalid as invalid:
        raise IdentityProviderRefused("invalid_metadata", str(invalid)) from invalid
    with transaction.atomic():
        idp = IdentityProvider.objects.select_for_update().filter(organization=organization).first()
        created = idp is None
        if idp is None:
            if parsed is None:
                raise IdentityProviderRefused("invalid_metadata", "paste the identity provider's metadata or its URL")
            idp = IdentityProvider(organization=organization)
        if parsed is not None:
            idp.entity_id = parsed.entity_id
            idp.sso_url = parsed.sso_url
            idp.certificates = parsed.certificates
            idp.metadata_xml = parsed.xml
            idp.metadata_url = metadata_url or ""
            idp.metadata_fetched_at = timezone.now() if metadata_url else None
        idp.enabled = enabled
        idp.allow_idp_initiated = allow_idp_initiated
        idp.default_role = default_role
        idp.save()
        audit_record(
            organization=organization,
            actor=actor,
            action="sso.configured",
            target=idp,
            metadata={
                "created": created,
                "metadata_changed": parsed is not None,
                "source": "url" if metadata_url else ("xml" if metadata_xml else ""),
                "entity_id": idp.entity_id,
                "sso_url": idp.sso_url,
                "certificates_sha256": [_certificate_fingerprint(c) for c in idp.certificates],
                "enabled": enabled,
                "allow_idp_initiated": allow_idp_initiated,
                "default_role": default_role,
            },
        )
    return idp


@transaction.atomic
def identity_provider_delete(*, organization: Organization, actor: Principal) -> None:
    """Remove the organization's IdP (allowed on any plan, so a downgraded organization can clean up).
    Members keep their memberships; sign-in through SSO stops at once."""
    _security_actor_require(organization=organization, actor=actor)
    idp = IdentityProvider.objects.select_for_update().filter(organization=organization).first()
    if idp is None:
        raise IdentityProviderRefused("not_found", "this organization has no identity provider")
    entity_id = idp.entity_id
    idp.delete()
    # The IdP's subjects linked to people here: a later IdP starts afresh.
    SocialAccount.objects.filter(provider=provider_sub_id(organization)).delete()
    audit_record(organization=organization, actor=actor, action="sso.removed", metadata={"entity_id": entity_id})


def _sso_actor(idp: IdentityProvider) -> Principal:
    return Principal.system(f"sso:{idp.entity_id}"[:254])


def _email_domain_verified(*, organization: Organization, email: str) -> bool:
    # Exactly the verified domain (IDNA-normalised as domains are stored): a verified example.com
    # doesn't vouch for eu.example.com.
    domain = email_domain(email)
    if domain is None:
        return False
    return SsoDomain.objects.filter(organization=organization, domain=domain, verified_at__isnull=False).exists()


def _person_for_address(email: str) -> User:
    """The account of a verified address from the organization's IdP, created if there is none.

    An account whose address was never verified is someone's claim, not proof: the IdP's answer
    verifies the address, and the password chosen by whoever made the claim stops working."""
    address = EmailAddress.objects.select_related("user").filter(email__iexact=email, verified=True).first()
    if address is not None:
        found: User = address.user
        return found
    user = User.objects.filter(email__iexact=email).first()
    if user is None:
        try:
            with transaction.atomic():  # a savepoint: the same person signing in to another organization at once
                user = User.objects.create_user(email=email)  # no usable password: they sign in through SSO
        except IntegrityError:
            user = User.objects.get(email__iexact=email)
    elif user.has_usable_password():
        user.set_unusable_password()
        user.save(update_fields=["password"])
    EmailAddress.objects.filter(email__iexact=email, verified=False).exclude(user=user).delete()
    EmailAddress.objects.update_or_create(
        user=user, email__iexact=email, defaults={"email": email, "verified": True, "primary": True}
    )
    return user


@transaction.atomic
def sso_login_complete(
    *,
    organization: Organization,
    idp: IdentityProvider,
    email: str,
    client: dict[str, str],
    assertion_id: str,
    authn_contexts: list[str],
) -> User:
    """The person an accepted SAML assertion signs in: their address must be in a verified domain of
    the organization; the account is created if missing (just in time) and made a member with the
    IdP's default role if it isn't one (within the plan's members). Raises SamlRefused."""
    if not email or "@" not in email:
        raise SamlRefused("no_email")
    if not _email_domain_verified(organization=organization, email=email):
        raise SamlRefused("domain_not_verified", (email_domain(email) or "")[:253])
    # First: sign-ins to one organization take turns, so two first sign-ins of the same person
    # (two tabs) make one account and one membership, and the member count below holds.
    locked = Organization.objects.select_for_update(of=("self",)).select_related("plan").get(pk=organization.pk)
    user = _person_for_address(email)
    if not user.is_active:
        raise SamlRefused("user_inactive")
    membership_created = False
    if not Membership.objects.filter(organization=locked, user=user).exists():
        seats = entitlement(locked, "members", used=Membership.objects.filter(organization=locked).count())
        max_members = seats.limit
        if not seats.allowed:
            raise SamlRefused("plan_limit_members", f"{max_members} members")
        membership_create(user=user, organization=locked, role=Role(idp.default_role), actor=_sso_actor(idp))
        membership_created = True
    audit_record(
        organization=locked,
        actor=Principal.for_user(user),
        action="sso.login",
        target=user,
        metadata={
            "email": email,
            "idp": idp.entity_id,
            "assertion_sha256": hashlib.sha256(assertion_id.encode()).hexdigest(),
            "authn_contexts": authn_contexts,
            "membership_created": membership_created,
            **client,
        },
    )
    return user


def sso_login_refused_record(*, organization: Organization, refused: SamlRefused, client: dict[str, str]) -> None:
    """Record a refused SAML response (or use of SSO) in the organization's audit log, in a
    transaction of its own (what was refused may have rolled back)."""
    with transaction.atomic():
        audit_record(
            organization=organization,
            actor=Principal.system("anonymous"),
            action="sso.login_refused",
            metadata={"reason": refused.reason, "detail": refused.detail, **client},
        )


# --- Verified domains (sso-portal) ---------------------------------------------------------------


class SsoDomainRefused(Exception):
    """A domain change that can't be made; `code` for programs, the message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _domain_actor_require(*, organization: Organization, actor: Principal) -> None:
    if actor.kind == "system":
        return
    if actor.kind in ("user", "operator") and actor.id is not None:
        # The current membership, not a request's (briefly cached) permissions.
        held = membership_permissions(user_id=int(actor.id), organization_id=organization.pk) or frozenset()
    else:
        held = actor.permissions or frozenset()
    if Permission.SECURITY_MANAGE.value not in held and Permission.ADMIN.value not in held:
        raise SsoDomainRefused("permission_denied", f"this needs the {Permission.SECURITY_MANAGE.value} permission")


def _plan_require_sso(organization: Organization) -> None:
    if not entitlement(organization, "sso").allowed:
        raise SsoDomainRefused("plan_without_sso", "your plan doesn't include SSO")


def _domain_of(*, organization: Organization, domain_id: int, lock: bool = False) -> SsoDomain:
    rows = SsoDomain.objects.select_for_update() if lock else SsoDomain.objects.all()
    # Scoped to the organization: another organization's domain id is "not found", never touched.
    found = rows.filter(organization=organization, pk=domain_id).first()
    if found is None:
        raise SsoDomainRefused("not_found", "no such domain in this organization")
    return found


def _verified_elsewhere(*, organization: Organization, domain: str) -> bool:
    return (
        SsoDomain.objects.filter(domain=domain, verified_at__isnull=False).exclude(organization=organization).exists()
    )


@transaction.atomic
def sso_domain_add(*, organization: Organization, actor: Principal, domain: str) -> SsoDomain:
    """Claim an email domain for the organization; it counts once verified (sso_domain_verify_dns)."""
    _domain_actor_require(organization=organization, actor=actor)
    _plan_require_sso(organization)
    try:
        name = domain_normalize(domain)
    except DomainInvalid as invalid:
        raise SsoDomainRefused("invalid_domain", str(invalid)) from invalid
    # The organization row's lock serialises adds, so the count below holds.
    Organization.objects.select_for_update().filter(pk=organization.pk).first()
    if _verified_elsewhere(organization=organization, domain=name):
        raise SsoDomainRefused("verified_elsewhere", f"{name} is verified by another organization")
    if SsoDomain.objects.filter(organization=organization, domain=name).exists():
        raise SsoDomainRefused("duplicate", f"{name} is already in the list")
    if SsoDomain.objects.filter(organization=organization).count() >= settings.SSO_MAX_DOMAINS:
        raise SsoDomainRefused(
            "too_many_domains", f"an organization may claim at most {settings.SSO_MAX_DOMAINS} domains"
        )
    try:
        with transaction.atomic():
            row = SsoDomain.objects.create(
                organization=organization, domain=name, verification_token=verification_token_new()
            )
    except IntegrityError as exc:
        raise SsoDomainRefused("duplicate", f"{name} is already in the list") from exc
    audit_record(
        organization=organization, actor=actor, action="sso.domain_added", target=row, metadata={"domain": name}
    )
    return row


def _dns_checks_allow(organization: Organization) -> bool:
    """At most SSO_DNS_CHECKS_PER_MINUTE lookups per organization and minute (fixed window)."""
    key = f"sso:dns-checks:{organization.pk}:{int(timezone.now().timestamp() // 60)}"
    client = redis_client()
    count = int(client.incr(key))
    if count == 1:
        client.expire(key, 120)
    return count <= settings.SSO_DNS_CHECKS_PER_MINUTE


def sso_domain_verify_dns(*, organization: Organization, actor: Principal, domain_id: int) -> SsoDomain:
    """Look for the domain's TXT record and mark it verified when the record carries its token.

    Not one transaction: the DNS lookup (up to SSO_DNS_TIMEOUT_SECONDS) happens before any row is
    locked, and the write that follows re-reads the row under a lock."""
    _domain_actor_require(organization=organization, actor=actor)
    _plan_require_sso(organization)
    row = _domain_of(organization=organization, domain_id=domain_id)
    if row.verified_at is not None:
        return row
    if _verified_elsewhere(organization=organization, domain=row.domain):
        raise SsoDomainRefused("verified_elsewhere", f"{row.domain} is verified by another organization")
    if not _dns_checks_allow(organization):
        raise SsoDomainRefused("rate_limited", "too many DNS checks in the last minute; try again in a minute")
    check = dns_txt_check(domain=row.domain, token=row.verification_token)
    if check.outcome is DnsOutcome.UNREACHABLE:
        raise SsoDomainRefused("dns_unreachable", check.detail)
    if check.outcome is not DnsOutcome.FOUND:
        raise SsoDomainRefused("dns_record_missing", check.detail)
    return _domain_mark_verified(organization=organization, domain_id=domain_id, actor=actor, verified_by="dns")


def _domain_mark_verified(
    *, organization: Organization, domain_id: int, actor: Principal, verified_by: str
) -> SsoDomain:
    with transaction.atomic():
        row = _domain_of(organization=organization, domain_id=domain_id, lock=True)
        if row.verified_at is not None:
            return row
        row.verified_at = timezone.now()
        row.verified_by = verified_by
        try:
            with transaction.atomic():
                row.save(update_fields=["verified_at", "verified_by"])
        except IntegrityError as exc:
            # Another organization verified it between our check and this write (sso_domain_verified_once).
            raise SsoDomainRefused("verified_elsewhere", f"{row.domain} is verified by another organization") from exc
        audit_record(
            organization=organization,
            actor=actor,
            action="sso.domain_verified",
            target=row,
            metadata={"domain": row.domain, "method": verified_by.partition(":")[0]},
        )
        return row


def sso_domain_confirm_by_operator(*, domain_id: int, operator: User) -> SsoDomain:
    """An operator (staff) confirms a domain without DNS (the admin's action), in the
    organization's audit log with the operator's name."""
    if not (operator.is_active and operator.is_staff):
        raise SsoDomainRefused("permission_denied", "only operators confirm domains")
    row = SsoDomain.objects.select_related("organization").filter(pk=domain_id).first()
    if row is None:
        raise SsoDomainRefused("not_found", "no such domain")
    organization = row.organization
    if _verified_elsewhere(organization=organization, domain=row.domain):
        raise SsoDomainRefused("verified_elsewhere", f"{row.domain} is verified by another organization")
    actor = Principal(kind="operator", id=str(operator.pk), label=operator.email)
    return _domain_mark_verified(
        organization=organization, domain_id=domain_id, actor=actor, verified_by=f"operator:{operator.email}"
    )


@transaction.atomic
def sso_domain_remove(*, organization: Organization, actor: Principal, domain_id: int) -> None:
    """Drop a claimed domain (and with it its SSO requirement). Allowed on any plan, so a downgraded
    organization can still clean up."""
    _domain_actor_require(organization=organization, actor=actor)
    row = _domain_of(organization=organization, domain_id=domain_id, lock=True)
    metadata = {"domain": row.domain, "was_verified": row.verified_at is not None, "required_sso": row.require_sso}
    audit_record(organization=organization, actor=actor, action="sso.domain_removed", target=row, metadata=metadata)
    row.delete()


@transaction.atomic
def sso_domain_require(*, organization: Organization, actor: Principal, domain_id: int, required: bool) -> SsoDomain:
    """Require (or stop requiring) sign-in through the organization's IdP for addresses of a
    verified domain: password, password reset and passkey sign-in are then refused for them.

    Turning it on needs an enabled IdP, or nobody of the domain could sign in at all."""
    _domain_actor_require(organization=organization, actor=actor)
    if required:
        _plan_require_sso(organization)
    row = _domain_of(organization=organization, domain_id=domain_id, lock=True)
    if row.require_sso == required:
        return row
    if required:
        if row.verified_at is None:
            raise SsoDomainRefused("domain_not_verified", f"verify {row.domain} before requiring SSO for it")
        if not _identity_provider_enabled(organization):
            raise SsoDomainRefused("idp_not_enabled", "configure and enable the identity provider first")
        if not _actor_may_keep_signing_in(organization=organization, actor=actor, domain=row.domain):
            raise SsoDomainRefused(
                "actor_without_sso",
                f"your own address is at {row.domain}: sign in once through the identity provider yourself first",
            )
    return _domain_require_write(organization=organization, actor=actor, row=row, required=required)


def _actor_may_keep_signing_in(*, organization: Organization, actor: Principal, domain: str) -> bool:
    """A person whose own address is in the domain has signed in through the IdP before: so the
    requirement they turn on doesn't lock them out of the settings page they turn it on from."""
    if actor.kind not in ("user", "operator") or actor.id is None:
        return True
    user_id = int(actor.id)
    addresses = [
        *User.objects.filter(pk=user_id).values_list("email", flat=True),
        *EmailAddress.objects.filter(user_id=user_id, verified=True).values_list("email", flat=True),
    ]
    if not any(email_domain(address) == domain for address in addresses):
        return True
    return bool(SocialAccount.objects.filter(user_id=user_id, provider=provider_sub_id(organization)).exists())


def _identity_provider_enabled(organization: Organization) -> bool:
    return IdentityProvider.objects.filter(organization=organization, enabled=True).exists()


def _domain_require_write(*, organization: Organization, actor: Principal, row: SsoDomain, required: bool) -> SsoDomain:
    row.require_sso = required
    row.save(update_fields=["require_sso"])
    audit_record(
        organization=organization,
        actor=actor,
        action="sso.domain_required",
        target=row,
        metadata={"domain": row.domain, "required": required},
    )
    return row


@transaction.atomic
def sso_domain_release_by_operator(*, domain_id: int, operator: User) -> SsoDomain:
    """Break-glass: an operator stops requiring SSO for a domain (an owner locked out by a broken
    IdP asks support), in the organization's audit log with the operator's name."""
    if not (operator.is_active and operator.is_staff):
        raise SsoDomainRefused("permission_denied", "only operators may do this")
    row = SsoDomain.objects.select_for_update(of=("self",)).select_related("organization").filter(pk=domain_id).first()
    if row is None:
        raise SsoDomainRefused("not_found", "no such domain")
    if not row.require_sso:
        return row
    actor = Principal(kind="operator", id=str(operator.pk), label=operator.email)
    return _domain_require_write(organization=row.organization, actor=actor, row=row, required=False)
