"""Memberships and custom roles. Two rules hold in every change: an organization always keeps an
owner, and nobody grants (or takes away) a role above their own — only an owner makes or unmakes
owners."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from django.db import IntegrityError, transaction

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.apikeys.services import apikey_revoke_for_member
from apps.audit.services import audit_record
from apps.rbac.models import CustomRole, Membership, Role
from apps.rbac.permissions import Permission, permissions_expand, role_permissions
from apps.rbac.selectors import membership_cache_forget, membership_grants
from apps.tenants.models import Organization


class MembershipChangeRefused(Exception):
    """A membership or role change the rules don't allow; `code` names the rule."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Ceiling:
    """What an actor may hand out in an organization: None = everything (the platform itself)."""

    def __init__(self, grants: frozenset[Permission] | None, is_owner: bool) -> None:
        self.grants = grants
        self.is_owner = is_owner

    def require(self, permission: Permission) -> None:
        if self.grants is not None and permission not in self.grants:
            raise MembershipChangeRefused("permission_denied", f"this needs the {permission.value} permission")

    def allows(self, permissions: frozenset[Permission], *, owner: bool) -> bool:
        if self.grants is None:
            return True
        if owner and not self.is_owner:
            return False
        return permissions <= self.grants


def _ceiling(*, organization: Organization, actor: Principal) -> _Ceiling:
    if actor.kind == "system":
        return _Ceiling(None, is_owner=True)
    if actor.kind in ("user", "operator") and actor.id is not None:
        # From the database, not the (briefly cached) request principal: a rule about roles is
        # decided on the current roles.
        membership = (
            Membership.objects.select_related("custom_role")
            .filter(organization=organization, user_id=int(actor.id))
            .first()
        )
        if membership is None:
            raise MembershipChangeRefused("not_a_member", "you are not a member of this organization")
        return _Ceiling(membership_grants(membership), is_owner=membership.role == Role.OWNER)
    # An API key: its scopes, and never an owner's powers.
    held = frozenset(Permission(value) for value in (actor.permissions or ()))
    return _Ceiling(permissions_expand(held), is_owner=False)


def _forget_on_commit(organization: Organization) -> None:
    # Now (this transaction's own later reads) and again at commit (a read in between by another
    # thread of this process may have cached the old role).
    membership_cache_forget(organization_id=organization.pk)
    transaction.on_commit(partial(membership_cache_forget, organization_id=organization.pk))


def _lock_owners(organization: Organization) -> list[int]:
    """Lock the organization's owner rows: two owners demoting each other at once can't both win."""
    return list(
        Membership.objects.select_for_update()
        .filter(organization=organization, role=Role.OWNER)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _role_label(membership: Membership) -> str:
    return membership.role or (f"custom:{membership.custom_role.name}" if membership.custom_role else "")


@transaction.atomic
def membership_create(
    *,
    user: User,
    organization: Organization,
    role: Role | str | CustomRole,
    actor: Principal,
) -> Membership:
    if isinstance(role, CustomRole):
        _custom_role_check_usable(organization=organization, custom_role=role)
        membership = Membership.objects.create(user=user, organization=organization, role="", custom_role=role)
    else:
        membership = Membership.objects.create(user=user, organization=organization, role=Role(role))
    audit_record(
        organization=organization,
        actor=actor,
        action="membership.created",
        target=membership,
        metadata={"user_id": user.pk, "user": user.email, "role": _role_label(membership)},
    )
    _forget_on_commit(organization)
    return membership


@transaction.atomic
def membership_role_change(
    *,
    organization: Organization,
    membership: Membership,
    role: Role | str | CustomRole,
    actor: Principal,
) -> Membership:
    """Give a member another built-in role or one of the organization's custom roles."""
    if membership.organization_id != organization.pk:
        raise MembershipChangeRefused("not_found", "no such member in this organization")
    owners = _lock_owners(organization)
    membership = Membership.objects.select_related("custom_role", "user").get(pk=membership.pk)
    ceiling = _ceiling(organization=organization, actor=actor)
    ceiling.require(Permission.MEMBERS_MANAGE)
    if isinstance(role, CustomRole):
        _custom_role_check_usable(organization=organization, custom_role=role)
        new_grants = permissions_expand(frozenset(Permission(value) for value in role.permissions))
        new_owner = False
    else:
        role = Role(role)
        new_grants = role_permissions(role)
        new_owner = role == Role.OWNER
    was_owner = membership.role == Role.OWNER
    if not ceiling.allows(membership_grants(membership), owner=was_owner):
        raise MembershipChangeRefused("above_your_role", "you can't change the role of someone above your own role")
    if not ceiling.allows(new_grants, owner=new_owner):
        raise MembershipChangeRefused("above_your_role", "you can't grant a role with more than your own permissions")
    if was_owner and not new_owner and owners == [membership.pk]:
        raise MembershipChangeRefused(
            "last_owner", "the organization must keep an owner: make someone else owner first"
        )
    previous = _role_label(membership)
    if isinstance(role, CustomRole):
        membership.role, membership.custom_role = "", role
    else:
        membership.role, membership.custom_role = role, None
    membership.save(update_fields=["role", "custom_role"])
    # Keys bound to this member may not keep scopes the member no longer holds.
    apikey_revoke_for_member(organization_id=organization.pk, user_id=membership.user_id)
    audit_record(
        organization=organization,
        actor=actor,
        action="membership.role_changed",
        target=membership,
        metadata={
            "user_id": membership.user_id,
            "user": membership.user.email,
            "from": previous,
            "to": _role_label(membership),
        },
    )
    _forget_on_commit(organization)
    return membership


@transaction.atomic
def membership_remove(*, organization: Organization, membership: Membership, actor: Principal) -> None:
    """Take a member out of the organization (anyone may leave, but never its last owner)."""
    if membership.organization_id != organization.pk:
        raise MembershipChangeRefused("not_found", "no such member in this organization")
    owners = _lock_owners(organization)
    membership = Membership.objects.select_related("custom_role", "user").get(pk=membership.pk)
    leaving = actor.kind in ("user", "operator") and actor.id == str(membership.user_id)
    is_owner = membership.role == Role.OWNER
    if not leaving:
        ceiling = _ceiling(organization=organization, actor=actor)
        ceiling.require(Permission.MEMBERS_MANAGE)
        if not ceiling.allows(membership_grants(membership), owner=is_owner):
            raise MembershipChangeRefused("above_your_role", "you can't remove someone above your own role")
    if is_owner and owners == [membership.pk]:
        raise MembershipChangeRefused(
            "last_owner", "the organization must keep an owner: make someone else owner first"
        )
    audit_record(
        organization=organization,
        actor=actor,
        action="membership.removed",
        target=membership,
        metadata={"user_id": membership.user_id, "user": membership.user.email, "role": _role_label(membership)},
    )
    membership.delete()
    apikey_revoke_for_member(organization_id=organization.pk, user_id=membership.user_id)
    _forget_on_commit(organization)


def _custom_role_check_usable(*, organization: Organization, custom_role: CustomRole) -> None:
    if custom_role.organization_id != organization.pk:
        raise MembershipChangeRefused("not_found", "no such role in this organization")
    _custom_roles_require(organization)


def _custom_roles_require(organization: Organization) -> None:
    if not organization.plan.limit("custom_roles"):
        raise MembershipChangeRefused("plan_limit", "custom roles are not included in this organization's plan")


def _permissions_parse(permissions: Iterable[str]) -> list[str]:
    known = {permission.value for permission in Permission}
    unknown = sorted(set(permissions) - known)
    if unknown:
        raise MembershipChangeRefused("unknown_permission", f"unknown permissions: {', '.join(unknown)}")
    return sorted(set(permissions))


@transaction.atomic
def custom_role_create(
    *, organization: Organization, name: str, permissions: Iterable[str], actor: Principal
) -> CustomRole:
    """A named set of permissions members can be given (plans with `custom_roles`)."""
    _custom_roles_require(organization)
    values = _permissions_parse(permissions)
    ceiling = _ceiling(organization=organization, actor=actor)
    ceiling.require(Permission.MEMBERS_MANAGE)
    if not ceiling.allows(permissions_expand(frozenset(Permission(value) for value in values)), owner=False):
        raise MembershipChangeRefused("above_your_role", "a role can't hold more than your own permissions")
    name = name.strip()
    if not name:
        raise MembershipChangeRefused("invalid_name", "a role needs a name")
    try:
        with transaction.atomic():
            custom_role = CustomRole.objects.create(organization=organization, name=name, permissions=values)
    except IntegrityError as duplicate:
        raise MembershipChangeRefused("duplicate_name", f"a role named {name!r} exists already") from duplicate
    audit_record(
        organization=organization,
        actor=actor,
        action="custom_role.created",
        target=custom_role,
        metadata={"name": name, "permissions": values},
    )
    return custom_role


@transaction.atomic
def custom_role_update(
    *, organization: Organization, custom_role: CustomRole, permissions: Iterable[str], actor: Principal
) -> CustomRole:
    """Change a custom role's permissions (every member holding it changes with it)."""
    if custom_role.organization_id != organization.pk:
        raise MembershipChangeRefused("not_found", "no such role in this organization")
    _custom_roles_require(organization)
    values = _permissions_parse(permissions)
    ceiling = _ceiling(organization=organization, actor=actor)
    ceiling.require(Permission.MEMBERS_MANAGE)
    before = frozenset(Permission(value) for value in custom_role.permissions)
    after = frozenset(Permission(value) for value in values)
    if not (
        ceiling.allows(permissions_expand(before), owner=False)
        and ceiling.allows(permissions_expand(after), owner=False)
    ):
        raise MembershipChangeRefused("above_your_role", "a role can't hold more than your own permissions")
    previous = list(custom_role.permissions)
    custom_role.permissions = values
    custom_role.save(update_fields=["permissions"])
    for user_id in Membership.objects.filter(custom_role=custom_role).values_list("user_id", flat=True):
        apikey_revoke_for_member(organization_id=organization.pk, user_id=user_id)
    audit_record(
        organization=organization,
        actor=actor,
        action="custom_role.changed",
        target=custom_role,
        metadata={"name": custom_role.name, "from": previous, "to": values},
    )
    _forget_on_commit(organization)
    return custom_role


@transaction.atomic
def custom_role_delete(*, organization: Organization, custom_role: CustomRole, actor: Principal) -> None:
    """Delete a custom role nobody holds (members are moved to another role first)."""
    if custom_role.organization_id != organization.pk:
        raise MembershipChangeRefused("not_found", "no such role in this organization")
    _ceiling(organization=organization, actor=actor).require(Permission.MEMBERS_MANAGE)
    if Membership.objects.filter(custom_role=custom_role).exists():
        raise MembershipChangeRefused("role_in_use", "members hold this role: give them another role first")
    audit_record(
        organization=organization,
        actor=actor,
        action="custom_role.deleted",
        target=custom_role,
        metadata={"name": custom_role.name, "permissions": list(custom_role.permissions)},
    )
    custom_role.delete()
