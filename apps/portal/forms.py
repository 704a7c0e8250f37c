"""Sign-up: the account and its first organization, in one form and one transaction."""

from __future__ import annotations

from typing import Any

from allauth.account.forms import SignupForm as AllauthSignupForm
from django import forms
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse_lazy
from django.utils.html import escape

from apps.accounts.models import User
from apps.accounts.principals import Principal
from apps.tenants.errors import ProvisioningError
from apps.tenants.models import Organization
from apps.tenants.services import organization_create, slug_validate


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
    field_order = ["email", "password1", "password2", "organization_name", "organization_slug"]

    organization: Organization | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["email"].label = "Work email"
        self.fields["organization_slug"].help_text = escape(
            "3 to 40 lowercase letters, digits and single hyphens, starting with a letter. "
            f"Your portal will be at <address>.{settings.BASE_DOMAIN}."
        )

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
            # A slug taken by a concurrent sign-up since clean() raises here and rolls the user back.
            self.organization = organization_create(
                slug=self.cleaned_data["organization_slug"],
                name=self.cleaned_data["organization_name"],
                owner_email=user.email,
                actor=Principal.for_user(user),
            )
        return user
