"""Sign-up: the account and its first organization, in one form and one transaction; or, following
an invitation link, the account alone, joining the inviting organization once its address is verified."""

from __future__ import annotations

from typing import Any

from allauth.account.forms import SignupForm as AllauthSignupForm
from allauth.core import context as allauth_context
from django import forms
from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse_lazy
from django.utils.html import escape
from django_tenants.utils import get_public_schema_name, schema_context

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.rbac.models import Invitation
from apps.rbac.selectors import invitation_for_token, invitation_state
from apps.rbac.services import invitation_follow
from apps.sso.selectors import sso_required_for
from apps.tenants.errors import ProvisioningError
from apps.tenants.models import Organization
from apps.tenants.services import organization_create, slug_validate

_INVITATION_PROBLEMS = {
    "accepted": "This invitation was accepted already.",
    "revoked": "This invitation was revoked: ask for a new one.",
    "expired": "This invitation has expired: ask for a new one.",
}


def _invitation_label(invitation: Invitation) -> str:
    return invitation.custom_role.name if invitation.custom_role is not None else str(invitation.role)


class SignupForm(AllauthSignupForm):
    """allauth's sign-up form (email, password twice) plus the first organization's name and slug.

    The slug is validated as the CLI validates it (apps.tenants.services.slug_validate); the
    organization is created with the new user as its owner in the same transaction as the user,
    so a failure leaves neither behind.
    """

    organization_name = forms.CharField(
        label="Organization name",
        max_length=200,
        widget=forms.TextInput(attrs={"autocomplete": "organization", "placeholder": "Acme Inc."}),
    )
    organization_slug = forms.CharField(
        label="Organization address",
        max_length=40,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "off",
                "autocapitalize": "none",
                "spellcheck": "false",
                "placeholder": "acme",
                # Checked as the person types (apps.portal.views.slug_check), announced politely.
                "hx-get": reverse_lazy("portal-slug-check"),
                "hx-trigger": "input changed delay:300ms",
                "hx-target": "#slug-check",
                "hx-sync": "this:replace",
            }
        ),
    )
    # The token of the invitation being followed, carried from the link (?invitation=) to the POST.
    invitation = forms.CharField(required=False, widget=forms.HiddenInput)
    field_order = ["email", "password1", "password2", "organization_name", "organization_slug", "invitation"]

    organization: Organization | None = None
    invited: Invitation | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["email"].label = "Work email"
        self.fields["organization_slug"].help_text = escape(
            "3 to 40 lowercase letters, digits and single hyphens, starting with a letter. "
            f"Your portal will be at <address>.{settings.BASE_DOMAIN}."
        )
        self.invited = self._invitation_followed()
        if self.invited is not None:
            # An invited person joins the inviting organization: they create none.
            del self.fields["organization_name"]
            del self.fields["organization_slug"]
            self.fields["email"].initial = self.invited.email
            self.fields["email"].help_text = escape(
                f"You were invited to {self.invited.organization.name} as {_invitation_label(self.invited)}: "
                f"sign up with {self.invited.email}."
            )

    def _invitation_followed(self) -> Invitation | None:
        """The open invitation of this host's organization that the sign-up follows, if any. A token
        that opens nothing here (unknown, another organization's, used, revoked, expired) falls back
        to a normal sign-up, with the reason shown."""
        # allauth doesn't hand the sign-up form its request; its middleware keeps it at hand.
        request: HttpRequest | None = allauth_context.request
        if request is None:
            return None
        source = request.POST if self.is_bound else request.GET
        token = str(source.get("invitation", "") or "")
        if not token:
            return None
        self.fields["invitation"].initial = token
        tenant = getattr(request, "tenant", None)
        problem = "This invitation link is not valid."
        invitation: Invitation | None = None
        if isinstance(tenant, Organization) and not tenant.is_public:
            try:
                invitation = invitation_for_token(organization=tenant, token=token)
            except Invitation.DoesNotExist:
                invitation = None
        if invitation is not None:
            state = invitation_state(invitation)
            if state == "open":
                return invitation
            problem = _INVITATION_PROBLEMS[state]
        self.fields["invitation"].initial = ""
        messages.error(request, f"{problem} You can still create an account with your own organization.")
        return None

    def clean_invitation(self) -> str:
        # Only an invitation found open here counts; a stale token is no more than a normal sign-up.
        return str(self.cleaned_data.get("invitation") or "") if self.invited is not None else ""

    def clean_email(self) -> str:
        email = str(super().clean_email())
        if self.invited is not None and email.lower() != self.invited.email.lower():
            # The invitation is for one address: another one would get an account and nothing else.
            raise forms.ValidationError(f"This invitation is for {self.invited.email}: sign up with that address.")
        if sso_required_for(email=email) is not None:
            # Its people sign in only through their organization's IdP, which makes their account.
            raise forms.ValidationError(
                "Your organization requires single sign-on for this address: use “Sign in with SSO” instead."
            )
        return email

    def clean_organization_name(self) -> str:
        name = str(self.cleaned_data["organization_name"]).strip()
        if not name:
            raise forms.ValidationError("The organization needs a name.")
        return name

    def clean_organization_slug(self) -> str:
        slug = str(self.cleaned_data["organization_slug"]).strip().lower()
        try:
            slug_validate(slug)
        except ProvisioningError as exc:
            raise forms.ValidationError(str(exc).capitalize() + ".") from exc
        return slug

    def save(self, request: HttpRequest) -> User | None:
        with transaction.atomic():
            user: User | None = super().save(request)
            if user is None:  # allauth's answer when the address is taken and enumeration is hidden
                return None
            if self.invited is not None:
                # Accepted when the address is verified (apps.portal.receivers), not before, in
                # whichever browser the verification link is opened: remembered on the invitation.
                invitation_follow(
                    organization=self.invited.organization, token=self.cleaned_data["invitation"], user=user
                )
                return user
            # Organizations live in the public schema (django-tenants refuses to create one from a
            # tenant's); sign-up is offered on every organization's host, so the creation switches
            # there and schema_context puts the request back on its own tenant right after.
            # A slug taken by a concurrent sign-up since clean() raises here and rolls the user back.
            with schema_context(get_public_schema_name()):
                self.organization = organization_create(
                    slug=self.cleaned_data["organization_slug"],
                    name=self.cleaned_data["organization_name"],
                    owner_email=user.email,
                    actor=Principal.for_user(user),
                )
        return user
