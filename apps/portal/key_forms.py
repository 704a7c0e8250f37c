"""The portal's API-key form: the scopes offered are those the signed-in member holds."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.utils import timezone

from apps.rbac.permissions import DESCRIPTIONS, Permission

# Days until a new key expires; "" never.
EXPIRY_CHOICES = [("", "Never"), ("7", "In 7 days"), ("30", "In 30 days"), ("90", "In 90 days"), ("365", "In a year")]


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

    def __init__(self, *args: Any, held: frozenset[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["scopes"]
        assert isinstance(field, forms.MultipleChoiceField)
        field.choices = scope_choices(held)

    def expires_at(self) -> dt.datetime | None:
        days = self.cleaned_data.get("expires_in") or ""
        return timezone.now() + dt.timedelta(days=int(days)) if days else None
