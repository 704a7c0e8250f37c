"""Verified email domains: claiming, DNS TXT verification against a real DNS server on 127.0.0.1,
operator confirmation, removal, the SSO requirement; two organizations throughout."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from allauth.socialaccount.models import SocialAccount
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.audit.models import AuditEvent
from apps.billing.models import Plan
from apps.billing.selectors import entitlement
from apps.rbac.models import Role
from apps.sso.domains import DomainInvalid, domain_normalize, verification_record_name, verification_record_value
from apps.sso.models import IdentityProvider, SsoDomain
from apps.sso.services import (
    SsoDomainRefused,
    sso_domain_add,
    sso_domain_confirm_by_operator,
    sso_domain_release_by_operator,
    sso_domain_remove,
    sso_domain_require,
    sso_domain_verify_dns,
)
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from tests.factories import member_make
from tests.support.dns_server import RunningDnsServer, dns_server_running, silent_dns_server


@pytest.fixture
def dns_server(settings: Any) -> Iterator[RunningDnsServer]:
    with dns_server_running() as server:
        settings.SSO_DNS_NAMESERVERS = [server.address]
        settings.SSO_DNS_TIMEOUT_SECONDS = 3
        settings.SSO_DNS_CHECKS_PER_MINUTE = 10_000
        yield server


@pytest.fixture
def orgs(two_tenants: tuple[Organization, Organization]) -> tuple[Organization, Organization]:
    """Organizations A and B on a plan with SSO."""
    enterprise = Plan.objects.get(code="enterprise")
    for organization in two_tenants:
        organization.plan = enterprise
        organization.save(update_fields=["plan"])
    return two_tenants


def admin_of(organization: Organization) -> Principal:
    return Principal.for_user(member_make(organization=organization, role=Role.ADMIN))


def publish(server: RunningDnsServer, row: SsoDomain) -> None:
    server.txt.setdefault(verification_record_name(row.domain), []).append(
        verification_record_value(row.verification_token)
    )


def actions(organization: Organization) -> list[tuple[str, dict[str, object]]]:
    with organization_schema(organization):
        return [(event.action, event.metadata) for event in AuditEvent.objects.order_by("id")]


class refused:
    """`with refused("code"):` — the block raises SsoDomainRefused with that code."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.error: SsoDomainRefused | None = None

    def __enter__(self) -> refused:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: object) -> bool:
        assert isinstance(error, SsoDomainRefused), f"expected SsoDomainRefused({self.code!r}), got {error!r}"
        assert error.code == self.code, f"expected {self.code!r}, got {error.code!r}: {error}"
        self.error = error
        return True


# --- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("Acme.COM", "acme.com"),
        ("  acme.com. ", "acme.com"),
        ("@acme.com", "acme.com"),
        ("mail.eu.acme.co.uk", "mail.eu.acme.co.uk"),
        ("bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_domain_is_stored_lowercase_ascii(typed: str, stored: str) -> None:
    assert domain_normalize(typed) == stored


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "localhost",
        "alice@acme.com",
        "https://acme.com",
        "acme.com:443",
        "acme.com/path",
        "1.2.3.4",
        "-acme.com",
        "acme-.com",
        "a" * 64 + ".com",
        ("a" * 60 + ".") * 5 + "com",
        "ac me.com",
        "acme..com",
    ],
)
def test_domain_that_is_not_a_domain_is_refused(typed: str) -> None:
    with pytest.raises(DomainInvalid):
        domain_normalize(typed)


@pytest.mark.parametrize("typed", ["gmail.com", "Outlook.com", "yahoo.com", "hotmail.co.uk", "yahoo.fr", "proton.me"])
def test_public_email_providers_are_refused(typed: str) -> None:
    with pytest.raises(DomainInvalid, match="public email provider"):
        domain_normalize(typed)


def test_a_company_whose_name_starts_like_a_provider_is_accepted() -> None:
    assert domain_normalize("outlook-analytics.com") == "outlook-analytics.com"
    assert domain_normalize("live.acme.com") == "live.acme.com"


# --- adding ------------------------------------------------------------------------------------


def test_add_stores_normalised_domain_with_a_token_and_audits_in_its_organization_only(
    orgs: tuple[Organization, Organization],
) -> None:
    org_a, org_b = orgs
    row = sso_domain_add(organization=org_a, actor=admin_of(org_a), domain="ACME.test")
    assert (row.domain, row.verified_at, row.require_sso) == ("acme.test", None, False)
    assert len(row.verification_token) == 32
    assert ("sso.domain_added", {"domain": "acme.test"}) in actions(org_a)
    assert not [a for a, _ in actions(org_b) if a.startswith("sso.")]


def test_add_refused_on_a_plan_without_sso(two_tenants: tuple[Organization, Organization]) -> None:
    org_a, _ = two_tenants
    assert not entitlement(org_a, "sso").allowed
    with refused("plan_without_sso"):
        sso_domain_add(organization=org_a, actor=admin_of(org_a), domain="acme.test")
    assert not SsoDomain.objects.filter(organization=org_a).exists()


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEVELOPER, Role.BILLING])
def test_add_refused_without_security_manage(orgs: tuple[Organization, Organization], role: Role) -> None:
    org_a, _ = orgs
    actor = Principal.for_user(member_make(organization=org_a, role=role))
    with refused("permission_denied"):
        sso_domain_add(organization=org_a, actor=actor, domain="acme.test")


def test_admin_of_another_organization_cannot_add(orgs: tuple[Organization, Organization]) -> None:
    org_a, org_b = orgs
    with refused("permission_denied"):
        sso_domain_add(organization=org_a, actor=admin_of(org_b), domain="acme.test")


def test_add_twice_is_refused_and_the_count_is_bounded(orgs: tuple[Organization, Organization], settings: Any) -> None:
    org_a, _ = orgs
    actor = admin_of(org_a)
    sso_domain_add(organization=org_a, actor=actor, domain="acme.test")
    with refused("duplicate"):
        sso_domain_add(organization=org_a, actor=actor, domain="Acme.Test.")
    settings.SSO_MAX_DOMAINS = 2
    sso_domain_add(organization=org_a, actor=actor, domain="acme2.test")
    with refused("too_many_domains"):
        sso_domain_add(organization=org_a, actor=actor, domain="acme3.test")


def test_public_provider_refused_by_the_service(orgs: tuple[Organization, Organization]) -> None:
    org_a, _ = orgs
    with refused("invalid_domain") as caught:
        sso_domain_add(organization=org_a, actor=admin_of(org_a), domain="gmail.com")
    assert "public email provider" in str(caught.error)


# --- DNS verification ---------------------------------------------------------------------------


def test_verify_finds_the_txt_record_on_the_dns_server(
    orgs: tuple[Organization, Organization], dns_server: RunningDnsServer
) -> None:
    org_a, _ = orgs
    actor = admin_of(org_a)
    row = sso_domain_add(organization=org_a, actor=actor, domain="acme.test")
    dns_server.txt["_cognitionos-verification.acme.test"] = [
        "v=spf1 -all",
        f"cognitionos-verification={row.verification_token}",
    ]
    verified = sso_domain_verify_dns(organization=org_a, actor=actor, domain_id=row.pk)
    assert verified.verified_at is not None
    assert verified.verified_by == "dns"
    assert "_cognitionos-verification.acme.test" in dns_server.resolver.queries
    assert ("sso.domain_verified", {"domain": "acme.test", "method": "dns"}) in actions(org_a)


def test_verify_accepts_a_value_split_into_several_strings(
    orgs: tuple[Organization, Organization], dns_server: RunningDnsServer
) -> None:
    org_a, _ = orgs
    actor = admin_of(org_a)
    row = sso_domain_add(organization=org_a, actor=actor, domain="acme.test")
    value = verification_record_value(row.verification_token)
    dns_server.txt["_cognitionos-verification.acme.test"] = [[value[:10], value[10:]]]
    assert sso_domain_verify_dns(organization=org_a, actor=actor, domain_id=row.pk).verified_at is not None


def test_verify_without_the_record_says_what_was_looked_up(
    orgs: tuple[Organization, Organization], dns_server: RunningDnsServer
) -> None:
    org_a, _ = orgs
    actor = admin_of(org_a)
    row = sso_domain_add(organization=org_a, actor=actor, domain="acme.test")
    with refused("dns_record_missing") as caught:
        sso_domain_verify_dns(organization=org_a, actor=actor, domain_id=row.pk)
    assert "_cognitionos-verification.acme.test" in str(caught.error)
    # Another token, or the right token at the apex instead of the verification name: still not verified.
    dns_server.txt["_cognitionos-verification.acme.test"] = ["cognitionos-verification=" + "0" * 32]
    dns_server.txt["acme.test"] = [verification_record_value(row.verification_token)]
    with refused("dns_record_missing"):
        sso_domain_verify_dns(organization=org_a, actor=actor, domain_id=row.pk)
    row.refresh_from_db()
    assert row.verified_at is None
    assert not [a for a, _ in actions(org_a) if a == "sso.domain_verified"]


def test_verify_gives_up_within_the_timeout_when_dns_does_not_answer(
    orgs: tuple[Organization, Organization], settings: Any
) -> None:
    org_a, _ = orgs
    actor = admin_of(org_a)
    row = sso_domain_add(organization=org_a, actor=actor, domain="acme.test")
    with silent_dns_server() as address:
        settings.SSO_DNS_NAMESERVERS = [address]
        settings.SSO_DNS_TIMEOUT_SECONDS = 1
        started = time.monotonic()
        with refused("dns_unreachable"):
            sso_domain_verify_dns(organization=org_a, actor=actor, domain_id=row.pk)
        assert time.monotonic() - started < 2.5


def test_dns_checks_per_organization_are_rate_limited(
    orgs: tuple[Organization, Organization], dns_server: RunningDnsServer, settings: Any
) -> None:
    org_a, _ = orgs
    actor = admin_of(org_a)
    row = sso_domain_add(organization=org_a, actor=actor, domain="acme.test")
    settings.SSO_DNS_CHECKS_PER_MINUTE = 0
    with refused("rate_limited"):
        sso_domain_verify_dns(organization=org_a, actor=actor, domain_id=row.pk)
    assert "_cognitionos-verification.acme.test" not in dns_server.resolver.queries


def test_verify_of_another_organizations_domain_id_is_not_found(
    orgs: tuple[Organization, Organization], dns_server: RunningDnsServer
) -> None:
    org_a, org_b = orgs
    row = sso_domain_add(organization=org_a, actor=admin_of(org_a), domain="acme.test")
    publish(dns_server, row)
    with refused("not_found"):
        sso_domain_verify_dns(organization=org_b, actor=admin_of(org_b), domain_id=row.pk)
    row.refresh_from_db()
    assert row.verified_at is None


def test_a_domain_verified_by_one_organization_cannot_be_added_or_verified_by_another(
    orgs: tuple[Organization, Organization], dns_server: RunningDnsServer
) -> None:
    org_a, org_b = orgs
    admin_a, admin_b = admin_of(org_a), admin_of(org_b)
    # Both claim it; B even publishes its own token. A verifies first.
    row_a = sso_domain_add(organization=org_a, actor=admin_a, domain="acme.test")
    row_b = sso_domain_add(organization=org_b, actor=admin_b, domain="acme.test")
    publish(dns_server, row_a)
    publish(dns_server, row_b)
    sso_domain_verify_dns(organization=org_a, actor=admin_a, domain_id=row_a.pk)
    with refused("verified_elsewhere"):
        sso_domain_verify_dns(organization=org_b, actor=admin_b, domain_id=row_b.pk)
    with refused("verified_elsewhere"):
        sso_domain_add(organization=org_b, actor=admin_b, domain="acme.test")
    row_b.refresh_from_db()
    assert row_b.verified_at is None
    assert not [a for a, _ in actions(org_b) if a == "sso.domain_verified"]


def test_the_database_refuses_a_second_verified_row_for_a_domain(orgs: tuple[Organization, Organization]) -> None:
    org_a, org_b = orgs
    SsoDomain.objects.create(organization=org_a, domain="acme.test", verification_token="a", verified_at=timezone.now())
    with pytest.raises(IntegrityError), transaction.atomic():
        SsoDomain.objects.create(
            organization=org_b, domain="acme.test", verification_token="b", verified_at=timezone.now()
        )


# --- operators -----------------------------------------------------------------------------------


def test_operator_confirms_a_domain_and_the_organizations_log_names_them(
    orgs: tuple[Organization, Organization],
) -> None:
    org_a, org_b = orgs
    row = sso_domain_add(organization=org_a, actor=admin_of(org_a), domain="acme.test")
    operator = User.objects.create_user(email="op@ops.test", is_staff=True)
    confirmed = sso_domain_confirm_by_operator(domain_id=row.pk, operator=operator)
    assert confirmed.verified_at is not None
    assert confirmed.verified_by == "operator:op@ops.test"
    with organization_schema(org_a):
        event = AuditEvent.objects.get(action="sso.domain_verified")
    assert (event.actor_kind, event.actor_label, event.metadata["method"]) == ("operator", "op@ops.test", "operator")
    assert not [a for a, _ in actions(org_b) if a == "sso.domain_verified"]


def test_a_non_staff_user_cannot_confirm(orgs: tuple[Organization, Organization]) -> None:
    org_a, _ = orgs
    row = sso_domain_add(organization=org_a, actor=admin_of(org_a), domain="acme.test")
    owner = member_make(organization=org_a, role=Role.OWNER)
    with refused("permission_denied"):
        sso_domain_confirm_by_operator(domain_id=row.pk, operator=owner)
    row.refresh_from_db()
    assert row.verified_at is None


def test_operator_cannot_confirm_a_domain_another_organization_verified(
    orgs: tuple[Organization, Organization],
) -> None:
    org_a, org_b = orgs
    SsoDomain.objects.create(organization=org_a, domain="acme.test", verification_token="a", verified_at=timezone.now())
    row_b = SsoDomain.objects.create(organization=org_b, domain="acme.test", verification_token="b")
    operator = User.objects.create_user(email="op@ops.test", is_staff=True)
    with refused("verified_elsewhere"):
        sso_domain_confirm_by_operator(domain_id=row_b.pk, operator=operator)


# --- removal and the requirement ---------------------------------------------------------------


def _verified(organization: Organization, domain: str = "acme.test") -> SsoDomain:
    return SsoDomain.objects.create(
        organization=organization,
        domain=domain,
        verification_token="t" * 32,
        verified_at=timezone.now(),
        verified_by="dns",
    )


def _idp(organization: Organization, *, enabled: bool = True) -> IdentityProvider:
    return IdentityProvider.objects.create(
        organization=organization,
        entity_id=f"https://idp.{organization.slug}.test/metadata",
        sso_url=f"https://idp.{organization.slug}.test/sso",
        certificates=["MIIB"],
        enabled=enabled,
    )


def test_remove_deletes_and_audits_and_another_organization_cannot(orgs: tuple[Organization, Organization]) -> None:
    org_a, org_b = orgs
    row = _verified(org_a)
    with refused("not_found"):
        sso_domain_remove(organization=org_b, actor=admin_of(org_b), domain_id=row.pk)
    sso_domain_remove(organization=org_a, actor=admin_of(org_a), domain_id=row.pk)
    assert not SsoDomain.objects.filter(pk=row.pk).exists()
    assert (
        "sso.domain_removed",
        {"domain": "acme.test", "was_verified": True, "required_sso": False},
    ) in actions(org_a)


def test_require_needs_a_verified_domain_and_an_enabled_idp(orgs: tuple[Organization, Organization]) -> None:
    org_a, _ = orgs
    actor = admin_of(org_a)
    pending = sso_domain_add(organization=org_a, actor=actor, domain="pending.test")
    with refused("domain_not_verified"):
        sso_domain_require(organization=org_a, actor=actor, domain_id=pending.pk, required=True)
    row = _verified(org_a)
    with refused("idp_not_enabled"):
        sso_domain_require(organization=org_a, actor=actor, domain_id=row.pk, required=True)
    idp = _idp(org_a, enabled=False)
    with refused("idp_not_enabled"):
        sso_domain_require(organization=org_a, actor=actor, domain_id=row.pk, required=True)
    idp.enabled = True
    idp.save()
    assert sso_domain_require(organization=org_a, actor=actor, domain_id=row.pk, required=True).require_sso
    assert ("sso.domain_required", {"domain": "acme.test", "required": True}) in actions(org_a)
    assert not sso_domain_require(organization=org_a, actor=actor, domain_id=row.pk, required=False).require_sso


def test_the_database_refuses_requiring_an_unverified_domain(orgs: tuple[Organization, Organization]) -> None:
    org_a, _ = orgs
    with pytest.raises(IntegrityError), transaction.atomic():
        SsoDomain.objects.create(organization=org_a, domain="acme.test", verification_token="a", require_sso=True)


def test_operator_break_glass_stops_requiring_sso(orgs: tuple[Organization, Organization]) -> None:
    org_a, _ = orgs
    row = _verified(org_a)
    _idp(org_a)
    sso_domain_require(organization=org_a, actor=admin_of(org_a), domain_id=row.pk, required=True)
    operator = User.objects.create_user(email="op@ops.test", is_staff=True)
    assert not sso_domain_release_by_operator(domain_id=row.pk, operator=operator).require_sso
    with organization_schema(org_a):
        event = AuditEvent.objects.filter(action="sso.domain_required").order_by("-id").first()
    assert event is not None
    assert (event.actor_kind, event.actor_label, event.metadata["required"]) == ("operator", "op@ops.test", False)


def test_requiring_sso_for_your_own_domain_needs_one_sign_in_through_it_first(
    orgs: tuple[Organization, Organization],
) -> None:
    org_a, org_b = orgs
    row = _verified(org_a)
    _idp(org_a)
    me = member_make(organization=org_a, role=Role.ADMIN, email="me@acme.test")
    with refused("actor_without_sso"):
        sso_domain_require(organization=org_a, actor=Principal.for_user(me), domain_id=row.pk, required=True)
    # A sign-in through another organization's IdP proves nothing about this one.
    SocialAccount.objects.create(user=me, provider=f"saml:{org_b.slug}", uid="me@acme.test")
    with refused("actor_without_sso"):
        sso_domain_require(organization=org_a, actor=Principal.for_user(me), domain_id=row.pk, required=True)
    SocialAccount.objects.create(user=me, provider=f"saml:{org_a.slug}", uid="me@acme.test")
    assert sso_domain_require(
        organization=org_a, actor=Principal.for_user(me), domain_id=row.pk, required=True
    ).require_sso
