"""Custom roles: a name and a set of known permissions, per organization, on plans whose limits
include `custom_roles`; a member holding one gets exactly those permissions on every endpoint."""

from __future__ import annotations

import json

import pytest
from django.db import IntegrityError, transaction
from django.test import Client

from apps.accounts.principals import Principal
from apps.api.permissions import required_permission
from apps.apikeys.models import ApiKey
from apps.apikeys.services import apikey_create
from apps.billing.models import Plan
from apps.rbac.models import CustomRole, Membership, Role
from apps.rbac.permissions import Permission
from apps.rbac.services import (
    MembershipChangeRefused,
    custom_role_create,
    custom_role_delete,
    custom_role_update,
    membership_role_change,
)
from apps.tenants.models import Organization
from apps.tenants.selectors import organization_cache_forget
from tests.factories import TEST_ACTOR, member_make
from tests.rbac.walk import declared_endpoints


def _on_plan(organization: Organization, code: str) -> Organization:
    organization.plan = Plan.objects.get(code=code)
    organization.save(update_fields=["plan"])
    organization_cache_forget()
    return organization


@pytest.fixture
def enterprise(tenant: Organization) -> Organization:
    # Inside the test's transaction: rolled back with it.
    return _on_plan(tenant, "enterprise")


def test_custom_roles_are_an_enterprise_entitlement(db: None) -> None:
    def includes(code: str) -> bool:
        version = Plan.objects.get(code=code).current_version()
        assert version is not None
        return version.custom_roles

    assert includes("enterprise") is True
    assert includes("pro") is False
    assert includes("free") is False


def test_a_plan_without_custom_roles_refuses_them(tenant: Organization) -> None:
    assert tenant.plan.code == "suite"  # the suite's plan (tests/factories.py): no custom roles
    with pytest.raises(MembershipChangeRefused) as refused:
        custom_role_create(organization=tenant, name="Auditor", permissions=["audit:read"], actor=TEST_ACTOR)
    assert refused.value.code == "plan_limit"


def test_a_member_with_a_custom_role_gets_exactly_its_permissions_on_every_endpoint(
    enterprise: Organization,
) -> None:
    granted = {Permission.JOBS_READ, Permission.JOBS_WRITE, Permission.BUDGETS_READ}
    role = custom_role_create(
        organization=enterprise, name="Job runner", permissions=[p.value for p in granted], actor=TEST_ACTOR
    )
    user = member_make(organization=enterprise, role=role)
    client = Client(HTTP_HOST=f"{enterprise.slug}.localhost")
    client.force_login(user)
    wrong: list[str] = []
    for endpoint in declared_endpoints():
        view = endpoint.view(**endpoint.initkwargs)
        for method in endpoint.methods:
            needed = required_permission(view, method)
            response = client.generic(method, endpoint.path, "{}", content_type="application/json")
            refused = response.status_code == 403
            if refused:
                assert json.loads(response.content)["error"]["code"] == "permission_denied"
            if refused == (needed in granted):
                wrong.append(f"{method} {endpoint.path} needs {needed}: answered {response.status_code}")
    assert not wrong, "\n".join(wrong)
    # Changing the role changes what its members may do, at once.
    custom_role_update(organization=enterprise, custom_role=role, permissions=["jobs:read"], actor=TEST_ACTOR)
    assert client.post("/api/v1/jobs", {}, content_type="application/json").status_code == 403
    assert client.get("/api/v1/jobs").status_code == 200


def test_unknown_permissions_are_refused_by_the_service_and_the_database(enterprise: Organization) -> None:
    with pytest.raises(MembershipChangeRefused) as refused:
        custom_role_create(organization=enterprise, name="Typo", permissions=["jobs:raed"], actor=TEST_ACTOR)
    assert refused.value.code == "unknown_permission"
    with pytest.raises(IntegrityError), transaction.atomic():
        CustomRole.objects.create(organization=enterprise, name="Typo", permissions=["jobs:raed"])


def test_a_membership_holds_a_built_in_role_or_a_custom_role_never_both(enterprise: Organization) -> None:
    role = custom_role_create(organization=enterprise, name="Reader", permissions=["jobs:read"], actor=TEST_ACTOR)
    user = member_make(organization=enterprise, role=Role.VIEWER)
    with pytest.raises(IntegrityError), transaction.atomic():
        Membership.objects.filter(user=user).update(custom_role=role)
    with pytest.raises(IntegrityError), transaction.atomic():
        Membership.objects.filter(user=user).update(role="")


def test_names_are_unique_per_organization_only(two_tenants: tuple[Organization, Organization]) -> None:
    organization_a, organization_b = (_on_plan(organization, "enterprise") for organization in two_tenants)
    custom_role_create(organization=organization_a, name="Reader", permissions=["jobs:read"], actor=TEST_ACTOR)
    with pytest.raises(MembershipChangeRefused) as refused:
        custom_role_create(organization=organization_a, name="Reader", permissions=[], actor=TEST_ACTOR)
    assert refused.value.code == "duplicate_name"
    custom_role_create(organization=organization_b, name="Reader", permissions=["jobs:read"], actor=TEST_ACTOR)


def test_another_organizations_custom_role_cannot_be_given(two_tenants: tuple[Organization, Organization]) -> None:
    organization_a, organization_b = (_on_plan(organization, "enterprise") for organization in two_tenants)
    role_of_b = custom_role_create(
        organization=organization_b, name="Reader", permissions=["jobs:read"], actor=TEST_ACTOR
    )
    user = member_make(organization=organization_a, role=Role.VIEWER)
    membership = Membership.objects.get(user=user, organization=organization_a)
    with pytest.raises(MembershipChangeRefused) as refused:
        membership_role_change(organization=organization_a, membership=membership, role=role_of_b, actor=TEST_ACTOR)
    assert refused.value.code == "not_found"
    assert Membership.objects.get(pk=membership.pk).custom_role_id is None


def test_nobody_makes_a_custom_role_above_their_own_permissions(enterprise: Organization) -> None:
    admin = member_make(organization=enterprise, role=Role.ADMIN)
    billing = member_make(organization=enterprise, role=Role.BILLING)
    wide = custom_role_create(
        organization=enterprise, name="Wide", permissions=["jobs:write", "keys:manage"], actor=Principal.for_user(admin)
    )
    # A key limited to members:manage and jobs:read can't create or give a role with jobs:write.
    key = Principal(kind="api_key", id="9", label="k", permissions=frozenset({"members:manage", "jobs:read"}))
    with pytest.raises(MembershipChangeRefused) as refused:
        custom_role_create(organization=enterprise, name="Writer", permissions=["jobs:write"], actor=key)
    assert refused.value.code == "above_your_role"
    membership = Membership.objects.get(user=billing, organization=enterprise)
    with pytest.raises(MembershipChangeRefused):
        membership_role_change(organization=enterprise, membership=membership, role=wide, actor=key)
    membership_role_change(organization=enterprise, membership=membership, role=wide, actor=Principal.for_user(admin))
    assert Membership.objects.get(pk=membership.pk).custom_role == wide


def test_a_custom_role_in_use_is_not_deleted(enterprise: Organization) -> None:
    role = custom_role_create(organization=enterprise, name="Reader", permissions=["jobs:read"], actor=TEST_ACTOR)
    user = member_make(organization=enterprise, role=role)
    with pytest.raises(MembershipChangeRefused) as refused:
        custom_role_delete(organization=enterprise, custom_role=role, actor=TEST_ACTOR)
    assert refused.value.code == "role_in_use"
    membership = Membership.objects.get(user=user, organization=enterprise)
    membership_role_change(organization=enterprise, membership=membership, role=Role.VIEWER, actor=TEST_ACTOR)
    custom_role_delete(organization=enterprise, custom_role=role, actor=TEST_ACTOR)
    assert not CustomRole.objects.filter(pk=role.pk).exists()


def test_narrowing_a_custom_role_revokes_its_members_keys_that_exceed_it(enterprise: Organization) -> None:
    role = custom_role_create(
        organization=enterprise, name="Runner", permissions=["jobs:read", "jobs:write"], actor=TEST_ACTOR
    )
    user = member_make(organization=enterprise, role=role)
    write = apikey_create(organization=enterprise, name="w", actor=TEST_ACTOR, scopes=["jobs:write"], user=user)
    read = apikey_create(organization=enterprise, name="r", actor=TEST_ACTOR, scopes=["jobs:read"], user=user)
    custom_role_update(organization=enterprise, custom_role=role, permissions=["jobs:read"], actor=TEST_ACTOR)
    assert ApiKey.objects.get(pk=write.api_key.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=read.api_key.pk).revoked_at is None
