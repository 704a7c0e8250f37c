"""A plan without custom roles (after a downgrade): members holding a custom role act as Viewer,
cheaply (the plan comes with the membership row), and the Members page says so."""

from __future__ import annotations

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.billing.models import Plan
from apps.rbac.models import CustomRole, Role
from apps.rbac.permissions import Permission, permissions_expand, role_permissions
from apps.rbac.selectors import membership_cache_forget, membership_permissions
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from tests.factories import member_make


def _plan(organization: Organization, code: str) -> None:
    organization.plan = Plan.objects.get(code=code)
    organization.save(update_fields=["plan"])
    organization_cache_forget()
    membership_cache_forget()


def test_custom_role_members_act_as_viewer_while_the_plan_lacks_custom_roles(
    two_tenants: tuple[Organization, Organization],
) -> None:
    tenant_a, tenant_b = two_tenants
    _plan(tenant_a, "enterprise")
    _plan(tenant_b, "enterprise")
    keys_role = CustomRole.objects.create(
        organization=tenant_a, name="Key keeper", permissions=[Permission.KEYS_MANAGE.value]
    )
    keeper = member_make(organization=tenant_a, role=keys_role)
    other_role = CustomRole.objects.create(
        organization=tenant_b, name="Key keeper", permissions=[Permission.KEYS_MANAGE.value]
    )
    other_keeper = member_make(organization=tenant_b, role=other_role)
    assert Permission.KEYS_MANAGE.value in (
        membership_permissions(user_id=keeper.pk, organization_id=tenant_a.pk) or ()
    )

    _plan(tenant_a, "free")  # the downgrade: the role stays, its permissions don't count
    held = membership_permissions(user_id=keeper.pk, organization_id=tenant_a.pk)
    assert held == frozenset(p.value for p in permissions_expand(role_permissions(Role.VIEWER)))
    client = Client(HTTP_HOST="tenant-a.localhost")
    client.force_login(keeper)
    assert client.get("/keys/").status_code == 403
    assert client.get("/members/").status_code == 200  # a Viewer reads the members
    # The other organization, still on its plan, is unaffected.
    assert Permission.KEYS_MANAGE.value in (
        membership_permissions(user_id=other_keeper.pk, organization_id=tenant_b.pk) or ()
    )

    _plan(tenant_a, "enterprise")  # back on a plan with custom roles: the role counts again
    assert Permission.KEYS_MANAGE.value in (
        membership_permissions(user_id=keeper.pk, organization_id=tenant_a.pk) or ()
    )


def test_the_check_costs_no_query_more(tenant: Organization) -> None:
    _plan(tenant, "free")
    viewer = member_make(organization=tenant, role=Role.VIEWER)
    # The plan's entitlements are cached per process (apps.billing.entitlements): warm, no query.
    membership_permissions(user_id=viewer.pk, organization_id=tenant.pk)
    with CaptureQueriesContext(connection) as counted:
        membership_permissions(user_id=viewer.pk, organization_id=tenant.pk)
    # One query (django-tenants' search_path aside): the membership, its custom role and the plan.
    assert [q["sql"] for q in counted.captured_queries if q["sql"].startswith("SELECT")] == [
        q["sql"] for q in counted.captured_queries if "rbac_membership" in q["sql"]
    ]
    assert len([q for q in counted.captured_queries if q["sql"].startswith("SELECT")]) == 1


def test_the_members_page_says_the_custom_role_acts_as_viewer(tenant: Organization) -> None:
    _plan(tenant, "enterprise")
    auditor = CustomRole.objects.create(organization=tenant, name="Auditor", permissions=[Permission.AUDIT_READ.value])
    member_make(organization=tenant, role=auditor, email="audit@example.com")
    owner = member_make(organization=tenant, role=Role.OWNER)
    _plan(tenant, "free")
    client = Client(HTTP_HOST=f"{tenant.slug}.localhost")
    client.force_login(owner)
    page = client.get("/members/").content.decode()
    assert "Auditor (custom, acting as Viewer)" in page
    assert "doesn't include custom roles: members who hold one act as Viewer" in page
    assert "(custom)</option>" not in page  # custom roles aren't offered meanwhile
    assert '<option value="" selected disabled>Auditor (custom, acting as Viewer)</option>' in page
    # Nor can one be given over the API.
    given = client.patch(
        "/api/v1/members/" + str(owner.memberships.get().pk),
        {"custom_role": auditor.pk},
        content_type="application/json",
    )
    assert given.status_code == 403 and given.json()["error"]["code"] == "plan_limit"
