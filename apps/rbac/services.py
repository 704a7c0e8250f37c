"""Memberships and custom roles. Two rules hold in every change: an organization always keeps an
owner, and nobody grants (or takes away) a role above their own — only an owner makes or unmakes
owners."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from datetime import timedelta
from functools import partial, wraps
from typing import ParamSpec, TypeVar

from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.apikeys.services import apikey_revoke_for_member
from apps.audit.services import audit_record
from apps.billing.selectors import entitlement
from apps.rbac.models import CustomRole, Invitation, Membership, Role
from apps.rbac.permissions import Permission, permissions_expand, role_permissions
from apps.rbac.selectors import (
    custom_roles_included,
    invitation_address_verified,
    invitation_open_list,
    invitation_state,
    invitation_token_hash,
    membership_cache_forget,
    membership_grants,
)
from apps.tenants.models import Organization
from cognitionos.redis import redis_client
from cognitionos.refusals import Refusal

P = ParamSpec("P")
R = TypeVar("R")


# A refused change, by the rule it broke: the answer's status.
_STATUS = {
    "not_found": 404,
    "not_a_member": 403,
    "permission_denied": 403,
    "above_your_role": 403,
    "plan_limit": 403,
    "last_owner": 409,
    "duplicate_name": 409,
    "role_in_use": 409,
    "unknown_permission": 400,
    "invalid_name": 400,
    "plan_limit_members": 403,
    "already_member": 409,
    "invitation_exists": 409,
    "invitation_used": 409,
    "invalid_email": 400,
    "invitation_revoked": 409,
    "rate_limited": 429,
}


class MembershipChangeRefused(Refusal):
    """A membership or role change the rules don't allow; `code` names the rule (and the status)."""

    def __init__(self, code: str, message: str, *, details: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = _STATUS.get(code, 400)
        # A plan's refusal names its entitlement (apps.billing): {"entitlement": "members", ...}.
        self.details = details


def _refusals_about(param: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Every refusal of the decorated service names `param` (the request field a change is about)."""

    def decorate(service: Callable[P, R]) -> Callable[P, R]:
        @wraps(service)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return service(*args, **kwargs)
            except MembershipChangeRefused as refused:
                refused.param = refused.param or param
                raise

        return wrapper

    return decorate


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
        grants = membership_grants(membership, custom_roles=custom_roles_included(organization))
        return _Ceiling(grants, is_owner=membership.role == Role.OWNER)
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


@_refusals_about("role")
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
    held = membership_grants(membership, custom_roles=custom_roles_included(organization))
    if not ceiling.allows(held, owner=was_owner):
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
        held = membership_grants(membership, custom_roles=custom_roles_included(organization))
        if not ceiling.allows(held, owner=is_owner):
            raise MembershipChangeRefused("above_your_role", "you can't remove someone above your own role")
    if is_owner and owners == [membership.pk]:
        raise MembershipChangeRefused(
            "last_owner", "the organization must keep an owner: make someone else owner first"
        )
    audit_record(
        organization=organization,
        actor=actor,
        action="membership.left" if leaving else "membership.removed",
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
    included = entitlement(organization, "custom_roles")
    if not included.allowed:
        raise MembershipChangeRefused(
            "plan_limit", "custom roles are not included in this organization's plan", details=included.details()
        )


def _permissions_parse(permissions: Iterable[str]) -> list[str]:
    known = {permission.value for permission in Permission}
    unknown = sorted(set(permissions) - known)
    if unknown:
        raise MembershipChangeRefused("unknown_permission", f"unknown permissions: {', '.join(unknown)}")
    return sorted(set(permissions))


@_refusals_about("permissions")
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


@_refusals_about("permissions")
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


# Invitations -------------------------------------------------------------------------------------

INVITATION_LIFETIME = timedelta(days=7)


def _invitation_role_label(invitation: Invitation) -> str:
    return invitation.role or (f"custom:{invitation.custom_role.name}" if invitation.custom_role else "")


def _seat_check(organization: Organization) -> None:
    """Refuse one more open invitation when members and open invitations fill the plan's seats."""
    members = Membership.objects.filter(organization=organization).count()
    seats = entitlement(organization, "members", used=members + invitation_open_list(organization=organization).count())
    max_members = seats.limit
    if not seats.allowed:
        raise MembershipChangeRefused(
            "plan_limit_members",
            f"the plan allows {max_members} members, counting open invitations: "
            "revoke an invitation, remove a member or change the plan",
            details=seats.details(),
        )


@_refusals_about("role")
@transaction.atomic
def invitation_create(
    *,
    organization: Organization,
    email: str,
    role: Role | str | CustomRole,
    actor: Principal,
    link_origin: str,
    lifetime: timedelta = INVITATION_LIFETIME,
) -> tuple[Invitation, str]:
    """Invite an address to the organization with a role (never above the actor's own) and email it
    the accept link on the organization's host (`link_origin`, scheme://host[:port]). Returns the
    invitation and the link; the token itself is only in the link."""
    # The organization row serializes invitations: two at once can't both take the last seat.
    organization = Organization.objects.select_for_update(of=("self",)).select_related("plan").get(pk=organization.pk)
    ceiling = _ceiling(organization=organization, actor=actor)
    ceiling.require(Permission.MEMBERS_MANAGE)
    email = email.strip().lower()
    try:
        validate_email(email)
    except ValidationError as invalid:
        raise MembershipChangeRefused("invalid_email", "enter a valid email address") from invalid
    if isinstance(role, CustomRole):
        _custom_role_check_usable(organization=organization, custom_role=role)
        grants = permissions_expand(frozenset(Permission(value) for value in role.permissions))
        owner = False
    else:
        role = Role(role)
        grants, owner = role_permissions(role), role == Role.OWNER
    if not ceiling.allows(grants, owner=owner):
        raise MembershipChangeRefused(
            "above_your_role", "you can't invite to a role with more than your own permissions"
        )
    if Membership.objects.filter(organization=organization, user__email__iexact=email).exists():
        raise MembershipChangeRefused("already_member", f"{email} is a member already")
    now = timezone.now()
    still_open = Invitation.objects.filter(
        organization=organization, email=email, accepted_at__isnull=True, revoked_at__isnull=True
    )
    if still_open.filter(expires_at__gt=now).exists():
        raise MembershipChangeRefused("invitation_exists", f"{email} has an open invitation: revoke it first")
    # An expired invitation no longer holds the address (nor a seat): closed so a new one can be sent.
    still_open.update(revoked_at=now)
    _seat_check(organization)
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        organization=organization,
        email=email,
        role="" if isinstance(role, CustomRole) else role,
        custom_role=role if isinstance(role, CustomRole) else None,
        token_hash=invitation_token_hash(token),
        invited_by=actor.label[:254],
        expires_at=now + lifetime,
    )
    audit_record(
        organization=organization,
        actor=actor,
        action="invitation.created",
        target=invitation,
        metadata={
            "email": email,
            "role": _invitation_role_label(invitation),
            "expires_at": invitation.expires_at.isoformat(),
        },
    )
    link = _invitation_send(
        organization=organization, invitation=invitation, token=token, actor=actor, link_origin=link_origin
    )
    return invitation, link


def _invitation_send(
    *, organization: Organization, invitation: Invitation, token: str, actor: Principal, link_origin: str
) -> str:
    """Mail the accept link (inside the caller's transaction: if sending fails, no invitation exists
    that nobody received). Returns the link."""
    link = link_origin.rstrip("/") + reverse(
        "portal-invitation-accept", kwargs={"token": token}, urlconf="cognitionos.urls_tenant"
    )
    send_mail(
        subject=f"[CognitionOS] You are invited to {organization.name}",
        message=(
            f"{actor.label} invited you to join {organization.name} on CognitionOS "
            f"as {_invitation_role_label(invitation)}.\n\n"
            f"Accept the invitation (sign in or create an account with {invitation.email} first):\n{link}\n\n"
            f"The link works once and expires on {invitation.expires_at:%Y-%m-%d %H:%M} UTC.\n"
        ),
        from_email=None,
        recipient_list=[invitation.email],
    )
    return link


# Resending mails someone again: at most once a minute per invitation, and
# INVITATION_RESENDS_PER_HOUR per organization (tenant-scoped Redis keys).
INVITATION_RESEND_INTERVAL_SECONDS = 60
INVITATION_RESENDS_PER_HOUR = 30
_RESEND_ONE_KEY = "rbac:invitation:resend:{organization_id}:{invitation_id}"
_RESEND_HOUR_KEY = "rbac:invitation:resends:{organization_id}"


def _invitation_resend_allow(*, organization: Organization, invitation: Invitation) -> None:
    client = redis_client()
    one = _RESEND_ONE_KEY.format(organization_id=organization.pk, invitation_id=invitation.pk)
    if not client.set(one, "1", nx=True, ex=INVITATION_RESEND_INTERVAL_SECONDS):
        raise MembershipChangeRefused(
            "rate_limited", f"this invitation was just sent: try again in {INVITATION_RESEND_INTERVAL_SECONDS} seconds"
        )
    hour = _RESEND_HOUR_KEY.format(organization_id=organization.pk)
    count = int(client.incr(hour))
    if count == 1:  # the hour starts with its first resend (EXPIRE NX needs Redis 7)
        client.expire(hour, 3600)
    if count > INVITATION_RESENDS_PER_HOUR:
        client.delete(one)
        raise MembershipChangeRefused(
            "rate_limited", f"at most {INVITATION_RESENDS_PER_HOUR} invitations are resent an hour: try again later"
        )


@transaction.atomic
def invitation_resend(
    *,
    organization: Organization,
    invitation: Invitation,
    actor: Principal,
    link_origin: str,
    lifetime: timedelta = INVITATION_LIFETIME,
) -> tuple[Invitation, str]:
    """Mail an open (or expired, not accepted nor revoked) invitation again with a new token: the old
    link stops working, and the expiry starts over. Rate-limited (MembershipChangeRefused
    "rate_limited")."""
    if invitation.organization_id != organization.pk:
        raise MembershipChangeRefused("not_found", "no such invitation in this organization")
    # The organization row first, as invitation_create: a reopened invitation takes a seat.
    organization = Organization.objects.select_for_update(of=("self",)).select_related("plan").get(pk=organization.pk)
    ceiling = _ceiling(organization=organization, actor=actor)
    ceiling.require(Permission.MEMBERS_MANAGE)
    invitation = Invitation.objects.select_for_update(of=("self",)).select_related("custom_role").get(pk=invitation.pk)
    state = invitation_state(invitation)
    if state == "accepted":
        raise MembershipChangeRefused("invitation_used", "this invitation was accepted already")
    if state == "revoked":
        raise MembershipChangeRefused("invitation_revoked", "this invitation was revoked: send a new one")
    if invitation.custom_role is not None:
        _custom_roles_require(organization)
        grants = permissions_expand(frozenset(Permission(value) for value in invitation.custom_role.permissions))
        owner = False
    else:
        grants, owner = role_permissions(invitation.role), invitation.role == Role.OWNER
    if not ceiling.allows(grants, owner=owner):
        raise MembershipChangeRefused(
            "above_your_role", "you can't invite to a role with more than your own permissions"
        )
    if state == "expired":
        # An expired invitation holds no seat: reopening it needs one, as a new invitation would.
        _seat_check(organization)
    _invitation_resend_allow(organization=organization, invitation=invitation)
    token = secrets.token_urlsafe(32)
    invitation.token_hash = invitation_token_hash(token)
    invitation.expires_at = timezone.now() + lifetime
    invitation.save(update_fields=["token_hash", "expires_at"])
    audit_record(
        organization=organization,
        actor=actor,
        action="invitation.resent",
        target=invitation,
        metadata={
            "email": invitation.email,
            "role": _invitation_role_label(invitation),
            "expires_at": invitation.expires_at.isoformat(),
            "was": state,
        },
    )
    link = _invitation_send(
        organization=organization, invitation=invitation, token=token, actor=actor, link_origin=link_origin
    )
    return invitation, link


@transaction.atomic
def invitation_revoke(*, organization: Organization, invitation: Invitation, actor: Principal) -> Invitation:
    if invitation.organization_id != organization.pk:
        raise MembershipChangeRefused("not_found", "no such invitation in this organization")
    _ceiling(organization=organization, actor=actor).require(Permission.MEMBERS_MANAGE)
    invitation = Invitation.objects.select_for_update(of=("self",)).select_related("custom_role").get(pk=invitation.pk)
    if invitation.accepted_at is not None:
        raise MembershipChangeRefused("invitation_used", "this invitation was accepted already")
    if invitation.revoked_at is not None:
        return invitation
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit_record(
        organization=organization,
        actor=actor,
        action="invitation.revoked",
        target=invitation,
        metadata={"email": invitation.email, "role": _invitation_role_label(invitation)},
    )
    return invitation


@transaction.atomic
def invitation_accept(*, organization: Organization, token: str, user: User) -> Membership:
    """Accept an invitation as a signed-in user whose verified email is the invited address:
    once, before it expires, within the plan's members."""
    try:
        invitation = Invitation.objects.select_for_update().get(
            organization=organization, token_hash=invitation_token_hash(token)
        )
    except Invitation.DoesNotExist as missing:
        raise MembershipChangeRefused("not_found", "this invitation link is not valid here") from missing
    return _invitation_accept_locked(organization=organization, invitation=invitation, user=user, via="link")


def _invitation_accept_locked(
    *, organization: Organization, invitation: Invitation, user: User, via: str
) -> Membership:
    state = invitation_state(invitation)
    if state != "open":
        messages = {
            "accepted": ("invitation_used", "this invitation was accepted already"),
            "revoked": ("invitation_revoked", "this invitation was revoked"),
            "expired": ("invitation_expired", "this invitation has expired: ask for a new one"),
        }
        raise MembershipChangeRefused(*messages[state])
    if not invitation_address_verified(invitation=invitation, user=user):
        raise MembershipChangeRefused(
            "wrong_email", f"this invitation is for {invitation.email}: sign in with that verified address"
        )
    locked = Organization.objects.select_for_update(of=("self",)).select_related("plan").get(pk=organization.pk)
    if Membership.objects.filter(organization=locked, user=user).exists():
        raise MembershipChangeRefused("already_member", "you are a member of this organization already")
    seats = entitlement(locked, "members", used=Membership.objects.filter(organization=locked).count())
    max_members = seats.limit
    if not seats.allowed:
        raise MembershipChangeRefused(
            "plan_limit_members",
            f"the organization has reached its plan's {max_members} members",
            details=seats.details(),
        )
    actor = Principal.for_user(user)
    role: Role | CustomRole = invitation.custom_role if invitation.custom_role is not None else Role(invitation.role)
    membership = membership_create(user=user, organization=locked, role=role, actor=actor)
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    audit_record(
        organization=locked,
        actor=actor,
        action="invitation.accepted",
        target=invitation,
        metadata={"email": invitation.email, "user_id": user.pk, "role": _role_label(membership), "via": via},
    )
    return membership


@transaction.atomic
def invitation_follow(*, organization: Organization, token: str, user: User) -> Invitation:
    """Remember that `user` signed up through this invitation's link (the sign-up's own transaction):
    verifying the invited address then accepts it (invitation_accept_followed)."""
    invitation = Invitation.objects.select_for_update().get(
        organization=organization, token_hash=invitation_token_hash(token)
    )
    invitation.followed_by = user
    invitation.save(update_fields=["followed_by"])
    return invitation


def invitation_accept_followed(
    *, user: User, email: str
) -> list[tuple[Organization, Membership | MembershipChangeRefused]]:
    """On verification of `email`: accept the open invitations to that address whose link `user`
    signed up through — in whichever browser the address was verified (the sign-up followed the
    invitation, so this is the person's own choice, not every invitation that names the address).
    Each is its own transaction; a refusal (plan full, revoked meanwhile) is returned, not raised."""
    results: list[tuple[Organization, Membership | MembershipChangeRefused]] = []
    followed = (
        Invitation.objects.filter(
            followed_by=user, email__iexact=email, accepted_at__isnull=True, revoked_at__isnull=True
        )
        .select_related("organization")
        .order_by("pk")
    )
    for candidate in followed:
        try:
            with transaction.atomic():
                invitation = Invitation.objects.select_for_update().get(pk=candidate.pk)
                membership = _invitation_accept_locked(
                    organization=candidate.organization, invitation=invitation, user=user, via="email_verification"
                )
        except MembershipChangeRefused as refused:
            results.append((candidate.organization, refused))
        else:
            results.append((candidate.organization, membership))
    return results
