"""Role changes and removals: an organization always keeps an owner, nobody grants or takes away
a role above their own, only an owner makes owners; every change is audited."""

from __future__ import annotations

import pytest
from django.db import connection

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.apikeys.models import ApiKey
from apps.apikeys.services import apikey_create
from apps.audit.models import AuditEvent
from apps.rbac.models import Membership, Role
from apps.rbac.services import MembershipChangeRefused, membership_remove, membership_role_change
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from tests.factories import TEST_ACTOR, member_make


def _membership(user: User, organization: Organization) -> Membership:
    return Membership.objects.get(user=user, organization=organization)


def _as(user: User) -> Principal:
    return Principal.for_user(user)


def _refused(code: str, call: object, **kwargs: object) -> None:
    with pytest.raises(MembershipChangeRefused) as refused:
        call(**kwargs)  # type: ignore[operator]
    assert refused.value.code == code, refused.value


@pytest.fixture
def owner(tenant: Organization) -> User:
    # tenant-a's owner from provisioning is the first; this one is ours to act with.
    return member_make(organization=tenant, role=Role.OWNER)


def test_the_last_owner_can_be_neither_demoted_nor_removed(tenant: Organization) -> None:
    owners = Membership.objects.filter(organization=tenant, role=Role.OWNER)
    only = owners.get()
    actor = _as(only.user)
    _refused("last_owner", membership_role_change, organization=tenant, membership=only, role=Role.ADMIN, actor=actor)
    _refused("last_owner", membership_remove, organization=tenant, membership=only, actor=actor)
    # With a second owner, the first may step down.
    second = member_make(organization=tenant, role=Role.OWNER)
    membership_role_change(organization=tenant, membership=only, role=Role.ADMIN, actor=_as(second))
    assert _membership(only.user, tenant).role == Role.ADMIN
    _refused(
        "last_owner",
        membership_remove,
        organization=tenant,
        membership=_membership(second, tenant),
        actor=_as(second),
    )


def test_only_an_owner_makes_or_unmakes_owners(tenant: Organization, owner: User) -> None:
    admin = member_make(organization=tenant, role=Role.ADMIN)
    developer = member_make(organization=tenant, role=Role.DEVELOPER)
    target = _membership(developer, tenant)
    _refused(
        "above_your_role",
        membership_role_change,
        organization=tenant,
        membership=target,
        role=Role.OWNER,
        actor=_as(admin),
    )
    owner_membership = _membership(owner, tenant)
    _refused(
        "above_your_role",
        membership_role_change,
        organization=tenant,
        membership=owner_membership,
        role=Role.VIEWER,
        actor=_as(admin),
    )
    _refused("above_your_role", membership_remove, organization=tenant, membership=owner_membership, actor=_as(admin))
    membership_role_change(organization=tenant, membership=target, role=Role.OWNER, actor=_as(owner))
    assert _membership(developer, tenant).role == Role.OWNER
    # An admin manages everyone below an owner.
    membership_role_change(
        organization=tenant, membership=_membership(admin, tenant), role=Role.ADMIN, actor=_as(admin)
    )
    billing = member_make(organization=tenant, role=Role.BILLING)
    membership_role_change(
        organization=tenant, membership=_membership(billing, tenant), role=Role.ADMIN, actor=_as(admin)
    )


def test_an_api_key_with_every_scope_still_cannot_make_owners(tenant: Organization) -> None:
    developer = member_make(organization=tenant, role=Role.DEVELOPER)
    key = Principal(kind="api_key", id="1", label="ops key", permissions=frozenset({"admin"}))
    target = _membership(developer, tenant)
    _refused(
        "above_your_role", membership_role_change, organization=tenant, membership=target, role=Role.OWNER, actor=key
    )
    membership_role_change(organization=tenant, membership=target, role=Role.ADMIN, actor=key)
    narrow = Principal(kind="api_key", id="2", label="narrow", permissions=frozenset({"members:manage", "jobs:read"}))
    _refused(
        "above_your_role",
        membership_role_change,
        organization=tenant,
        membership=target,
        role=Role.VIEWER,
        actor=narrow,
    )


def test_members_without_members_manage_change_nothing(tenant: Organization) -> None:
    developer = member_make(organization=tenant, role=Role.DEVELOPER)
    viewer = member_make(organization=tenant, role=Role.VIEWER)
    target = _membership(viewer, tenant)
    # A developer holds every permission of a viewer, but may not manage members at all.
    _refused(
        "permission_denied",
        membership_role_change,
        organization=tenant,
        membership=target,
        role=Role.VIEWER,
        actor=_as(developer),
    )
    _refused("permission_denied", membership_remove, organization=tenant, membership=target, actor=_as(developer))


def test_a_member_may_leave(tenant: Organization) -> None:
    viewer = member_make(organization=tenant, role=Role.VIEWER)
    membership_remove(organization=tenant, membership=_membership(viewer, tenant), actor=_as(viewer))
    assert not Membership.objects.filter(user=viewer, organization=tenant).exists()


def test_role_changes_and_removals_are_audited(tenant: Organization, owner: User) -> None:
    developer = member_make(organization=tenant, role=Role.DEVELOPER)
    membership = _membership(developer, tenant)
    membership_role_change(organization=tenant, membership=membership, role=Role.BILLING, actor=_as(owner))
    membership_remove(organization=tenant, membership=membership, actor=_as(owner))
    with organization_schema(tenant):
        events = list(
            AuditEvent.objects.filter(target_id=str(membership.pk), target_type="rbac.Membership").order_by("id")
        )
    assert [event.action for event in events] == ["membership.created", "membership.role_changed", "membership.removed"]
    changed = events[1]
    assert changed.actor_id == str(owner.pk)
    assert changed.metadata["from"] == "developer" and changed.metadata["to"] == "billing"
    assert changed.metadata["user"] == developer.email
    assert events[2].metadata["role"] == "billing"


def test_a_membership_of_another_organization_is_not_changed_through_this_one(
    two_tenants: tuple[Organization, Organization],
) -> None:
    organization_a, organization_b = two_tenants
    owner_of_a = member_make(organization=organization_a, role=Role.OWNER)
    member_of_b = member_make(organization=organization_b, role=Role.DEVELOPER)
    in_b = _membership(member_of_b, organization_b)
    _refused(
        "not_found",
        membership_role_change,
        organization=organization_a,
        membership=in_b,
        role=Role.VIEWER,
        actor=_as(owner_of_a),
    )
    _refused("not_found", membership_remove, organization=organization_a, membership=in_b, actor=_as(owner_of_a))
    # Acting on B as A's owner: not a member there.
    _refused(
        "not_a_member",
        membership_role_change,
        organization=organization_b,
        membership=in_b,
        role=Role.VIEWER,
        actor=_as(owner_of_a),
    )
    assert _membership(member_of_b, organization_b).role == Role.DEVELOPER


def test_member_rows_become_developers_in_the_data_migration(tenant: Organization) -> None:
    from importlib import import_module

    from django.apps import apps as registry

    migration = import_module("apps.rbac.migrations.0002_roles_member_becomes_developer")
    user = member_make(organization=tenant, role=Role.VIEWER)
    with connection.cursor() as cursor:
        # As before the migration: the old check allowed `member`. (Deferred foreign-key checks
        # run first: a table with pending trigger events can't be altered.)
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE rbac_membership DROP CONSTRAINT rbac_membership_role_valid")
        cursor.execute("UPDATE rbac_membership SET role = 'member' WHERE user_id = %s", [user.pk])
    migration.member_to_developer(registry, None)
    assert _membership(user, tenant).role == Role.DEVELOPER


def test_keys_bound_to_a_member_lose_what_the_member_loses(tenant: Organization, owner: User) -> None:
    developer = member_make(organization=tenant, role=Role.DEVELOPER)
    invoke = apikey_create(organization=tenant, name="i", actor=TEST_ACTOR, scopes=["llm:invoke"], user=developer)
    read = apikey_create(organization=tenant, name="r", actor=TEST_ACTOR, scopes=["jobs:read"], user=developer)
    membership = _membership(developer, tenant)
    membership_role_change(organization=tenant, membership=membership, role=Role.VIEWER, actor=_as(owner))
    assert ApiKey.objects.get(pk=invoke.api_key.pk).revoked_at is not None  # viewers don't call models
    assert ApiKey.objects.get(pk=read.api_key.pk).revoked_at is None
    membership_remove(organization=tenant, membership=membership, actor=_as(owner))
    assert ApiKey.objects.get(pk=read.api_key.pk).revoked_at is not None
