"""The Members page (members, their roles, open invitations, the invite form) and the invitation's
accept page. Thin: the rules are apps.rbac.services'; these pages offer only what the signed-in
member may do and show the services' refusals."""

from __future__ import annotations

from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.portal.caller import caller_organization, caller_user
from apps.rbac.decorators import member_may, permission_required
from apps.rbac.models import CustomRole, Invitation, Membership, Role
from apps.rbac.permissions import Permission, permissions_expand, role_permissions
from apps.rbac.selectors import (
    custom_role_list,
    invitation_address_verified,
    invitation_for_token,
    invitation_link_origin,
    invitation_open_list,
    invitation_state,
    membership_grants,
    membership_list,
)
from apps.rbac.services import (
    MembershipChangeRefused,
    invitation_accept,
    invitation_create,
    invitation_revoke,
    membership_remove,
    membership_role_change,
)

_CUSTOM_PREFIX = "custom:"


@dataclass(frozen=True)
class _Actor:
    """What the signed-in member may hand out: the page offers only these roles and controls."""

    grants: frozenset[Permission]
    is_owner: bool

    def may_hold(self, permissions: frozenset[Permission], *, owner: bool) -> bool:
        return (self.is_owner or not owner) and permissions <= self.grants


def _actor(memberships: list[Membership], user: User) -> _Actor:
    mine = next((m for m in memberships if m.user_id == user.pk), None)
    if mine is None:
        return _Actor(frozenset(), is_owner=False)
    return _Actor(membership_grants(mine), is_owner=mine.role == Role.OWNER)


def _role_choices(actor: _Actor, custom_roles: list[CustomRole]) -> list[tuple[str, str]]:
    """The roles this member may give: built-in ones within their own, then custom ones."""
    choices = [
        (role.value, str(role.label))
        for role in Role
        if actor.may_hold(role_permissions(role), owner=role == Role.OWNER)
    ]
    for custom in custom_roles:
        granted = permissions_expand(frozenset(Permission(value) for value in custom.permissions))
        if actor.may_hold(granted, owner=False):
            choices.append((f"{_CUSTOM_PREFIX}{custom.pk}", f"{custom.name} (custom)"))
    return choices


def _role_value(membership: Membership | Invitation) -> str:
    return f"{_CUSTOM_PREFIX}{membership.custom_role_id}" if membership.custom_role_id else membership.role


def _role_label(membership: Membership | Invitation) -> str:
    if membership.custom_role is not None:
        return f"{membership.custom_role.name} (custom)"
    return str(Role(membership.role).label)


def _role_parse(value: str, custom_roles: list[CustomRole]) -> Role | CustomRole:
    if value.startswith(_CUSTOM_PREFIX):
        wanted = value.removeprefix(_CUSTOM_PREFIX)
        found = next((custom for custom in custom_roles if str(custom.pk) == wanted), None)
        if found is None:
            raise MembershipChangeRefused("not_found", "no such role in this organization")
        return found
    try:
        return Role(value)
    except ValueError as unknown:
        raise MembershipChangeRefused("not_found", "no such role") from unknown


class InviteForm(forms.Form):
    email = forms.EmailField(label="Email address", widget=forms.EmailInput(attrs={"autocomplete": "off"}))
    role = forms.ChoiceField(label="Role")

    def __init__(self, *args: object, role_choices: list[tuple[str, str]], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["role"].choices = role_choices  # type: ignore[attr-defined]
        if ("developer", "Developer") in role_choices:
            self.fields["role"].initial = "developer"


@dataclass(frozen=True)
class _Row:
    membership: Membership
    role_value: str
    role_label: str
    manageable: bool  # the signed-in member may change this member's role and remove them
    is_me: bool


def _rows(memberships: list[Membership], actor: _Actor, user: User, may_manage: bool) -> list[_Row]:
    return [
        _Row(
            membership=membership,
            role_value=_role_value(membership),
            role_label=_role_label(membership),
            manageable=may_manage
            and actor.may_hold(membership_grants(membership), owner=membership.role == Role.OWNER),
            is_me=membership.user_id == user.pk,
        )
        for membership in memberships
    ]


def _page(request: HttpRequest, form: InviteForm | None = None, status: int = 200) -> HttpResponse:
    organization = caller_organization(request)
    user = caller_user(request)
    # Three queries whatever the number of members: members (with users and custom roles), open
    # invitations, custom roles.
    memberships = list(membership_list(organization=organization))
    custom_roles = list(custom_role_list(organization=organization))
    actor = _actor(memberships, user)
    may_manage = member_may(request, Permission.MEMBERS_MANAGE)
    role_choices = _role_choices(actor, custom_roles) if may_manage else []
    invitations = [
        (invitation, _role_label(invitation)) for invitation in invitation_open_list(organization=organization)
    ]
    return render(
        request,
        "portal/members.html",
        {
            "organization": organization,
            "rows": _rows(memberships, actor, user, may_manage),
            "invitations": invitations,
            "may_manage": may_manage,
            "role_choices": role_choices,
            "form": form or (InviteForm(role_choices=role_choices) if may_manage else None),
            "max_members": organization.plan.limit("max_members"),
        },
        status=status,
    )


@never_cache
@permission_required({"GET": Permission.MEMBERS_READ, "POST": Permission.MEMBERS_MANAGE})
def members(request: HttpRequest) -> HttpResponse:
    """GET: the page. POST: the invite form."""
    if request.method != "POST":
        return _page(request)
    organization = caller_organization(request)
    custom_roles = list(custom_role_list(organization=organization))
    memberships = list(membership_list(organization=organization))
    form = InviteForm(request.POST, role_choices=_role_choices(_actor(memberships, caller_user(request)), custom_roles))
    if not form.is_valid():
        return _page(request, form=form, status=400)
    try:
        invitation, _link = invitation_create(
            organization=organization,
            email=form.cleaned_data["email"],
            role=_role_parse(form.cleaned_data["role"], custom_roles),
            actor=Principal.for_user(caller_user(request)),
            link_origin=invitation_link_origin(request=request, organization=organization),
        )
    except MembershipChangeRefused as refused:
        form.add_error(None, str(refused).capitalize() + ".")
        return _page(request, form=form, status=403 if refused.code == "plan_limit_members" else 400)
    messages.success(request, f"Invitation sent to {invitation.email}.")
    return redirect("portal-members")


def _member(request: HttpRequest, membership_id: int) -> Membership | None:
    return membership_list(organization=caller_organization(request)).filter(pk=membership_id).first()


@require_POST
@permission_required({"POST": Permission.MEMBERS_MANAGE})
def member_role(request: HttpRequest, membership_id: int) -> HttpResponse:
    """Change a member's role: with HTMX the row is answered in place, otherwise back to the page."""
    organization = caller_organization(request)
    membership = _member(request, membership_id)
    if membership is None:
        return HttpResponse("No such member.", status=404)
    custom_roles = list(custom_role_list(organization=organization))
    error = ""
    try:
        membership_role_change(
            organization=organization,
            membership=membership,
            role=_role_parse(request.POST.get("role", ""), custom_roles),
            actor=Principal.for_user(caller_user(request)),
        )
    except MembershipChangeRefused as refused:
        error = str(refused).capitalize() + "."
    if not request.htmx:  # type: ignore[attr-defined]
        if error:
            messages.error(request, error)
        else:
            messages.success(
                request, f"{membership.user.email} is now {_role_label(_member(request, membership_id) or membership)}."
            )
        return redirect("portal-members")
    memberships = list(membership_list(organization=organization))
    actor = _actor(memberships, caller_user(request))
    row = next(
        (
            row
            for row in _rows(memberships, actor, caller_user(request), may_manage=True)
            if row.membership.pk == membership_id
        ),
        None,
    )
    if row is None:  # no longer a member (removed meanwhile)
        return HttpResponse("")
    return render(
        request,
        "portal/members_row.html",
        {"row": row, "may_manage": True, "role_choices": _role_choices(actor, custom_roles), "error": error},
    )


@require_POST
@permission_required({"POST": Permission.MEMBERS_MANAGE})
def member_remove(request: HttpRequest, membership_id: int) -> HttpResponseBase:
    membership = _member(request, membership_id)
    if membership is None:
        return HttpResponse("No such member.", status=404)
    try:
        membership_remove(
            organization=caller_organization(request),
            membership=membership,
            actor=Principal.for_user(caller_user(request)),
        )
    except MembershipChangeRefused as refused:
        messages.error(request, str(refused).capitalize() + ".")
        return redirect("portal-members")
    if membership.user_id == caller_user(request).pk:
        messages.success(request, f"You left {caller_organization(request).name}.")
        return redirect("portal-enter")
    messages.success(request, f"{membership.user.email} was removed.")
    return redirect("portal-members")


@require_POST
@permission_required({"POST": Permission.MEMBERS_MANAGE})
def invitation_revoke_page(request: HttpRequest, invitation_id: int) -> HttpResponseBase:
    organization = caller_organization(request)
    invitation = Invitation.objects.filter(organization=organization, pk=invitation_id).first()
    if invitation is None:
        return HttpResponse("No such invitation.", status=404)
    try:
        invitation_revoke(
            organization=organization, invitation=invitation, actor=Principal.for_user(caller_user(request))
        )
    except MembershipChangeRefused as refused:
        messages.error(request, str(refused).capitalize() + ".")
    else:
        messages.success(request, f"The invitation to {invitation.email} was revoked.")
    return redirect("portal-members")


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def invitation_accept_page(request: HttpRequest, token: str) -> HttpResponseBase:
    """The link in the invitation's email. The token is the permission: signed out, the page asks to
    sign in (or sign up) with the invited address and come back; signed in with that verified
    address, one click accepts."""
    organization = caller_organization(request)
    if organization.is_public:
        return render(request, "portal/invitation.html", {"problem": "This invitation link is not valid."}, status=404)
    try:
        invitation = invitation_for_token(organization=organization, token=token)
    except Invitation.DoesNotExist:
        return render(request, "portal/invitation.html", {"problem": "This invitation link is not valid."}, status=404)
    context: dict[str, object] = {
        "organization": organization,
        "invitation": invitation,
        "role_label": _role_label(invitation),
        "state": invitation_state(invitation),
        # The sign-up link carries the token: the account is made without an organization of its
        # own and joins this one once the invited address is verified (apps.portal.forms).
        "token": token,
        "address_verified": request.user.is_authenticated
        and invitation_address_verified(invitation=invitation, user=caller_user(request)),
    }
    if request.method == "POST":
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        try:
            invitation_accept(organization=organization, token=token, user=caller_user(request))
        except MembershipChangeRefused as refused:
            context["problem"] = str(refused).capitalize() + "."
            return render(
                request, "portal/invitation.html", context, status=403 if refused.code == "wrong_email" else 409
            )
        messages.success(request, f"Welcome to {organization.name}.")
        return redirect("portal-home")
    return render(request, "portal/invitation.html", context)
