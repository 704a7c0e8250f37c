"""The portal's API-key form: the scopes offered are those the signed-in member holds."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from django import forms
from django.utils import timezone

from apps.rbac.permissions import DESCRIPTIONS, Permission
from cognitionos.redis import redis_client

# Days until a new key expires; "" never.
EXPIRY_CHOICES = [("", "Never"), ("7", "In 7 days"), ("30", "In 30 days"), ("90", "In 90 days"), ("365", "In a year")]


# How long a sent form is remembered, so that sending it again (a reload, a double click) creates
# no second key.
SUBMISSION_SECONDS = 3600


def scope_choices(held: frozenset[str]) -> list[tuple[str, str]]:
    """The scopes a member may put on a key: their own permissions (`admin` only if they hold it)."""
    return [
        (permission.value, f"{permission.value} — {DESCRIPTIONS[permission]}")
        for permission in Permission
        if permission.value in held
    ]


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(
        label="Name", max_length=100, help_text="What uses the key, e.g. “billing service, production”."
    )
    scopes = forms.MultipleChoiceField(
        label="Scopes",
        widget=forms.CheckboxSelectMultiple,
        help_text="What the key may do: never more than your own role allows.",
    )
    expires_in = forms.ChoiceField(label="Expires", choices=EXPIRY_CHOICES, required=False)
    bind_to_me = forms.BooleanField(
        label="Bind to me",
        required=False,
        help_text="The key stops working when you leave the organization or lose one of its scopes.",
    )

    # A random value per rendered form (absent from forms not made by this page).
    submission = forms.CharField(widget=forms.HiddenInput, required=False, max_length=64)

    def __init__(self, *args: Any, held: frozenset[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["submission"].initial = secrets.token_urlsafe(16)
        field = self.fields["scopes"]
        assert isinstance(field, forms.MultipleChoiceField)
        field.choices = scope_choices(held)

    def expires_at(self) -> dt.datetime | None:
        days = self.cleaned_data.get("expires_in") or ""
        return timezone.now() + dt.timedelta(days=int(days)) if days else None

    def _submission_key(self, organization_id: int) -> str | None:
        submission = self.cleaned_data.get("submission") or ""
        return f"portal:apikey-form:{organization_id}:{submission}" if submission else None

    def submission_claim(self, *, organization_id: int) -> bool:
        """False when this very form was already sent (atomic, so a double click counts once)."""
        key = self._submission_key(organization_id)
        return key is None or bool(redis_client().set(key, 1, nx=True, ex=SUBMISSION_SECONDS))

    def submission_release(self, *, organization_id: int) -> None:
        """The key was refused: the same form, corrected, may be sent again."""
        key = self._submission_key(organization_id)
        if key is not None:
            redis_client().delete(key)
