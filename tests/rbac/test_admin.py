from __future__ import annotations

from apps.accounts.models import User
from apps.billing.models import Plan
from apps.rbac.models import Role
from apps.rbac.services import custom_role_create
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR, member_make, operator_admin_client


def test_operators_see_memberships_and_custom_roles_in_the_admin(tenant: Organization) -> None:
    tenant.plan = Plan.objects.get(code="enterprise")
    tenant.save(update_fields=["plan"])
    role = custom_role_create(organization=tenant, name="Auditors", permissions=["audit:read"], actor=TEST_ACTOR)
    member = member_make(organization=tenant, role=role)
    member_make(organization=tenant, role=Role.BILLING)
    operator = User.objects.create_superuser(email="ops@example.com", password="a-long-password-1")
    client = operator_admin_client(operator)
    memberships = client.get("/admin/rbac/membership/", {"q": tenant.slug})
    assert memberships.status_code == 200
    assert member.email.encode() in memberships.content and b"Auditors" in memberships.content
    roles = client.get("/admin/rbac/customrole/")
    assert roles.status_code == 200 and b"audit:read" in roles.content
