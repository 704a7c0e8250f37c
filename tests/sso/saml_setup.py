"""An organization with SAML SSO set up for the tests: a plan with `sso`, a verified domain, an
IdP configured from the test IdP's metadata, and a browser (test client) on the organization's host.
`sso_organization` sets up one inside a fast test's transaction; `sso_organization_committed` makes
a committed one for integration tests (a server process or other threads see it) and removes it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.test import Client
from django.utils import timezone

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.billing.models import Plan
from apps.sso.models import IdentityProvider, SsoDomain
from apps.sso.services import identity_provider_configure
from apps.tenants.connection import organization_schema, tenant_connection
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from cognitionos.redis import redis_client
from tests.conftest import LiveDb
from tests.factories import TEST_ACTOR, organization_purge, plan_make, plan_purge
from tests.sso.idp import Assertion, TestIdp, authn_request_id, encoded


def sso_counters_forget() -> None:
    """The per-minute bound on audited refusals counts in the shared Redis: each test starts at 0."""
    client = redis_client()
    for key in client.scan_iter(match="sso:refusals:*"):
        client.delete(key)


def sso_plan() -> Plan:
    return plan_make(code="sso-tests", name="SSO tests", sso=True, max_members=50)


def plan_set(organization: Organization, plan: Plan) -> None:
    organization.plan = plan
    organization.save(update_fields=["plan"])
    organization_cache_forget()


def domain_verify(organization: Organization, domain: str) -> SsoDomain:
    return SsoDomain.objects.create(
        organization=organization,
        domain=domain,
        verification_token="t" * 32,
        verified_at=timezone.now(),
        verified_by="dns",
    )


@dataclass
class SsoOrganization:
    organization: Organization
    idp: TestIdp
    domain: str
    client: Client

    @property
    def slug(self) -> str:
        return self.organization.slug

    @property
    def host(self) -> str:
        return f"{self.slug}.localhost"

    @property
    def acs_url(self) -> str:
        return f"http://{self.host}/accounts/saml/{self.slug}/acs/"

    @property
    def sp_entity_id(self) -> str:
        return f"http://{self.host}/accounts/saml/{self.slug}/metadata/"

    def row(self) -> IdentityProvider:
        return IdentityProvider.objects.get(organization=self.organization)

    def spec(self, email: str | None = None, **changes: Any) -> Assertion:
        return Assertion(
            sp_entity_id=self.sp_entity_id,
            acs_url=self.acs_url,
            email=email or f"alice@{self.domain}",
            **changes,
        )

    def start_sign_in(self, client: Client | None = None, next_path: str | None = None) -> str:
        """SP-initiated: the sign-in button, then the IdP's URL; returns the AuthnRequest ID."""
        client = client or self.client
        query = f"?next={next_path}" if next_path else ""
        response = client.post(f"/accounts/saml/{self.slug}/login/{query}")
        assert response.status_code == 302, response.content[:500]
        assert response["Location"].startswith(self.idp.sso_url)
        return authn_request_id(response["Location"])

    def post(self, tree: Any, *, relay_state: str | None = None, client: Client | None = None) -> Any:
        """The browser posts the IdP's response to the ACS and follows to acs/finish/."""
        client = client or self.client
        data = {"SAMLResponse": tree if isinstance(tree, str) else encoded(tree)}
        if relay_state is not None:
            data["RelayState"] = relay_state
        posted = client.post(f"/accounts/saml/{self.slug}/acs/", data)
        if posted.status_code != 302:
            return posted
        assert posted["Location"] == f"/accounts/saml/{self.slug}/acs/finish/"
        return client.get(posted["Location"])

    def events(self, action: str) -> list[AuditEvent]:
        with organization_schema(self.organization):
            return list(AuditEvent.objects.filter(action=action).order_by("-id"))

    def last_event(self, action: str) -> AuditEvent | None:
        with organization_schema(self.organization):
            return AuditEvent.objects.filter(action=action).order_by("-id").first()

    def refused_reason(self) -> str | None:
        event = self.last_event("sso.login_refused")
        return None if event is None else str(event.metadata["reason"])


def sso_organization(
    organization: Organization,
    *,
    idp: TestIdp | None = None,
    domain: str | None = None,
    allow_idp_initiated: bool = False,
    default_role: str = "viewer",
    enabled: bool = True,
    plan: Plan | None = None,
) -> SsoOrganization:
    plan_set(organization, plan or sso_plan())
    domain = domain or f"corp-{organization.slug}.example"
    domain_verify(organization, domain)
    idp = idp or TestIdp(organization.slug)
    identity_provider_configure(
        organization=organization,
        actor=TEST_ACTOR,
        metadata_xml=idp.metadata_xml(),
        enabled=enabled,
        allow_idp_initiated=allow_idp_initiated,
        default_role=default_role,
    )
    return SsoOrganization(
        organization=organization, idp=idp, domain=domain, client=Client(HTTP_HOST=f"{organization.slug}.localhost")
    )


@contextmanager
def sso_organization_committed(
    live_db: LiveDb,
    *,
    slug: str,
    domain: str,
    idp: TestIdp,
    name: str | None = None,
    allow_idp_initiated: bool = False,
    default_role: str = "viewer",
    people: tuple[str, ...] = (),
) -> Iterator[SsoOrganization]:
    """A committed organization set up as `sso_organization` does, on a plan of its own (a committed
    "sso-tests" plan would outlive the test); on exit it goes with its plan and the accounts of
    `people` (signed in by SSO: users live in the public schema, not in the organization's)."""
    plan = plan_make(code=f"sso-{slug}", name=f"SSO {slug}", sso=True, max_members=10)
    organization = live_db.organization(slug=slug, name=name)
    tenant_connection().set_schema_to_public()
    try:
        yield sso_organization(
            organization,
            idp=idp,
            domain=domain,
            allow_idp_initiated=allow_idp_initiated,
            default_role=default_role,
            plan=plan,
        )
    finally:
        tenant_connection().set_schema_to_public()
        User.objects.filter(email__in=[*people, f"owner@{slug}.example.com"]).delete()
        live_db.created.remove(organization)
        organization_purge(organization)
        plan_purge(plan)
