from __future__ import annotations

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from apps.audit.models import AuditEvent
from apps.audit.services import audit_chain_link, audit_record
from apps.rbac.models import Membership, Role
from apps.tenants import template
from apps.tenants.errors import ProvisioningError
from apps.tenants.models import Domain, Organization
from apps.tenants.services import organization_create, organization_status_set
from apps.tenants.template import TemplateOutdated
from tests.factories import TEST_ACTOR, organization_make


def _schema_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [name])
        return cursor.fetchone() is not None


def test_organization_create_gives_schema_domain_owner_and_audit(db: None) -> None:
    organization = organization_make(slug="globex", name="Globex", plan_code="pro", owner_email="Hank@Globex.COM")

    assert organization.schema_name == "org_globex"
    assert _schema_exists("org_globex")
    assert organization.plan.code == "pro"
    assert organization.status == Organization.Status.ACTIVE
    assert Domain.objects.get(tenant=organization, is_primary=True).domain == "globex.localhost"
    membership = Membership.objects.select_related("user").get(organization=organization)
    assert (membership.user.email, membership.role) == ("hank@globex.com", Role.OWNER)
    with schema_context(organization.schema_name):
        actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["organization.created", "membership.created"]


def test_new_schema_is_usable_at_once(db: None) -> None:
    organization = organization_make(slug="initech")
    with schema_context(organization.schema_name):
        assert AuditEvent.objects.count() == 2
        # The identity sequence continues after the rows copied from the template; the chain too.
        probe = audit_record(organization=organization, actor=TEST_ACTOR, action="probe")
        assert AuditEvent.objects.filter(action="probe").count() == 1
        audit_chain_link(organization=organization)
        probe.refresh_from_db()
        assert probe.sequence == 3


@pytest.mark.parametrize(
    "slug",
    ["ab", "Acme", "-acme", "acme-", "ac--me", "1acme", "ac_me", "ac.me", "a" * 41, "public", "www", "api", "admin"],
)
def test_bad_slug_is_refused_and_creates_nothing(db: None, slug: str) -> None:
    before = (Organization.objects.count(), Domain.objects.count())
    with pytest.raises(ProvisioningError):
        organization_make(slug=slug)
    assert (Organization.objects.count(), Domain.objects.count()) == before


def test_duplicate_slug_is_refused(db: None) -> None:
    organization_make(slug="umbrella")
    with pytest.raises(ProvisioningError, match="already taken"):
        organization_make(slug="umbrella")


def test_unknown_plan_is_refused_with_the_known_ones(db: None) -> None:
    with pytest.raises(ProvisioningError, match="free, pro, enterprise"):
        organization_make(slug="hooli", plan_code="platinum")
    assert not Organization.objects.filter(slug="hooli").exists()


def test_stale_template_is_never_cloned(db: None) -> None:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM _template.django_migrations WHERE app = 'knowledge'")
    template._verified_current.clear()
    try:
        with pytest.raises(TemplateOutdated, match=r"knowledge\.0001_initial"):
            organization_make(slug="stale")
    finally:
        template._verified_current.clear()
    assert not Organization.objects.filter(slug="stale").exists()
    assert not _schema_exists("org_stale")


def test_failure_midway_leaves_no_row_and_no_schema(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(**kwargs: object) -> None:
        raise RuntimeError("membership store down")

    monkeypatch.setattr("apps.tenants.services.membership_create", fail)
    with pytest.raises(RuntimeError, match="membership store down"):
        organization_create(slug="halfway", name="Halfway", owner_email="o@halfway.example.com", actor=TEST_ACTOR)
    assert not Organization.objects.filter(slug="halfway").exists()
    assert not Domain.objects.filter(domain="halfway.localhost").exists()
    assert not _schema_exists("org_halfway")


def test_status_change_is_audited(tenant: Organization) -> None:
    organization_status_set(
        organization=tenant, status=Organization.Status.SUSPENDED, actor=TEST_ACTOR, reason="abuse report"
    )
    tenant.refresh_from_db()
    assert tenant.status == Organization.Status.SUSPENDED
    assert not tenant.accepts_requests and not tenant.accepts_jobs
    event = AuditEvent.objects.get(action="organization.status_changed")
    assert event.metadata == {"from": "active", "to": "suspended", "reason": "abuse report"}
