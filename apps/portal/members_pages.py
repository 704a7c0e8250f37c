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
from apps.billing.selectors import entitlement
from apps.portal.caller import caller_organization, caller_user
from apps.portal.paging import cursor_params, keyset_page
from apps.rbac.decorators import member_may, permission_required
from apps.rbac.models import CustomRole, Invitation, Membership, Role
from apps.rbac.permissions import Permission, permissions_expand, role_permissions
from apps.rbac.selectors import (
    CUSTOM_ROLE_FALLBACK,
    custom_role_list,
    custom_roles_included,
    invitation_address_verified,
    invitation_for_token,
    invitation_link_origin,
    invitation_open_list,
    invitation_state,
    membership_get,
    membership_grants,
    membership_list,
    organization_owner_count,
)
from apps.rbac.services import (
    MembershipChangeRefused,
    invitation_accept,
    invitation_create,
    invitation_resend,
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


def _actor(mine: Membership | None, *, custom_roles: bool) -> _Actor:
    if mine is None:
        return _Actor(frozenset(), is_owner=False)
    return _Actor(membership_grants(mine, custom_roles=custom_roles), is_owner=mine.role == Role.OWNER)


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


def _role_label(membership: Membership | Invitation, *, custom_roles: bool = True) -> str:
    if membership.custom_role is not None:
        if not custom_roles:
            return f"{membership.custom_role.name} (custom, acting as {CUSTOM_ROLE_FALLBACK.label})"
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
    # A custom role while the plan lacks custom roles: shown (acting as Viewer), not offered.
    custom_inactive: bool = False


def _row(membership: Membership, actor: _Actor, user: User, may_manage: bool, custom_roles: bool) -> _Row:
    return _Row(
        membership=membership,
        role_value=_role_value(membership),
        role_label=_role_label(membership, custom_roles=custom_roles),
        manageable=may_manage
        and actor.may_hold(
            membership_grants(membership, custom_roles=custom_roles), owner=membership.role == Role.OWNER
        ),
        is_me=membership.user_id == user.pk,
        custom_inactive=membership.custom_role_id is not None and not custom_roles,
    )


def _page(request: HttpRequest, form: InviteForm | None = None, status: int = 200) -> HttpResponse:
    organization = caller_organization(request)
    user = caller_user(request)
    custom_roles_on = custom_roles_included(organization)
    # A constant number of queries whatever the number of members: the caller's membership, a page
    # of members (with users and custom roles), a page of open invitations, the two counts, the
    # custom roles.
    mine = membership_get(organization=organization, user_id=user.pk)
    actor = _actor(mine, custom_roles=custom_roles_on)
    custom_roles = list(custom_role_list(organization=organization))
    may_manage = member_may(request, Permission.MEMBERS_MANAGE)
    # Custom roles are offered only while the plan includes them.
    role_choices = _role_choices(actor, custom_roles if custom_roles_on else []) if may_manage else []
    members_page = keyset_page(
        membership_list(organization=organization),
        request=request,
        prefix="members_",
        keep=cursor_params(request, ["invitations_"]),
    )
    # Newest first.
    invitations_page = keyset_page(
        invitation_open_list(organization=organization),
        request=request,
        prefix="invitations_",
        descending=True,
        keep=cursor_params(request, ["members_"]),
    )
    member_count = membership_list(organization=organization).count()
    # The last owner can't leave (the organization keeps an owner): no button to a refusal.
    may_leave = mine is not None and (
        mine.role != Role.OWNER or organization_owner_count(organization=organization) > 1
    )
    return render(
        request,
        "portal/members.html",
        {
            "organization": organization,
            "members_page": members_page,
            "rows": [_row(m, actor, user, may_manage, custom_roles_on) for m in members_page.items],
            "member_count": member_count,
            "invitations_page": invitations_page,
            "invitations": [
                (invitation, _role_label(invitation, custom_roles=custom_roles_on))
                for invitation in invitations_page.items
            ],
            "invitation_count": invitation_open_list(organization=organization).count(),
            "may_manage": may_manage,
            "may_leave": may_leave,
            "role_choices": role_choices,
            "form": form or (InviteForm(role_choices=role_choices) if may_manage else None),
            "max_members": entitlement(organization, "members").limit,
            "custom_roles_off": not custom_roles_on
            and any(member.custom_role_id is not None for member in members_page.items),
            "fallback_role": CUSTOM_ROLE_FALLBACK.label,
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
    custom_roles_on = custom_roles_included(organization)
    custom_roles = list(custom_role_list(organization=organization)) if custom_roles_on else []
    actor = _actor(
        membership_get(organization=organization, user_id=caller_user(request).pk), custom_roles=custom_roles_on
    )
    form = InviteForm(request.POST, role_choices=_role_choices(actor, custom_roles))
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
            changed = _member(request, membership_id) or membership
            messages.success(
                request,
                f"{membership.user.email} is now "
                f"{_role_label(changed, custom_roles=custom_roles_included(organization))}.",
            )
        return redirect("portal-members")
    custom_roles_on = custom_roles_included(organization)
    user = caller_user(request)
    actor = _actor(membership_get(organization=organization, user_id=user.pk), custom_roles=custom_roles_on)
    current = _member(request, membership_id)
    if current is None:  # no longer a member (removed meanwhile)
        return HttpResponse("")
    row = _row(current, actor, user, may_manage=True, custom_roles=custom_roles_on)
    return render(
        request,
        "portal/members_row.html",
        {
            "row": row,
            "may_manage": True,
            "role_choices": _role_choices(actor, custom_roles if custom_roles_on else []),
            "error": error,
        },
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


@require_POST
@permission_required({"POST": Permission.MEMBERS_MANAGE})
def invitation_resend_page(request: HttpRequest, invitation_id: int) -> HttpResponseBase:
    """Mail the invitation again with a new link (the old one stops working) and a new expiry."""
    organization = caller_organization(request)
    invitation = Invitation.objects.filter(organization=organization, pk=invitation_id).first()
    if invitation is None:
        return HttpResponse("No such invitation.", status=404)
    try:
        invitation_resend(
            organization=organization,
            invitation=invitation,
            actor=Principal.for_user(caller_user(request)),
            link_origin=invitation_link_origin(request=request, organization=organization),
        )
    except MembershipChangeRefused as refused:
        messages.error(request, str(refused).capitalize() + ".")
    else:
        messages.success(request, f"The invitation to {invitation.email} was sent again with a new link.")
    return redirect("portal-members")


@never_cache
@permission_required({"GET": Permission.MEMBERS_READ, "POST": Permission.MEMBERS_READ})
def member_leave(request: HttpRequest) -> HttpResponseBase:
    """GET: what leaving means, and the button to confirm. POST: leave (never the last owner)."""
    organization = caller_organization(request)
    mine = membership_get(organization=organization, user_id=caller_user(request).pk)
    if mine is None:
        return HttpResponse("You are not a member of this organization.", status=404)
    if request.method != "POST":
        return render(request, "portal/leave.html", {"organization": organization, "membership": mine})
    try:
        membership_remove(organization=organization, membership=mine, actor=Principal.for_user(caller_user(request)))
    except MembershipChangeRefused as refused:
        messages.error(request, str(refused).capitalize() + ".")
        return redirect("portal-members")
    messages.success(request, f"You left {organization.name}.")
    return redirect("portal-enter")


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
