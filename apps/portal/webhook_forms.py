"""The portal's webhook forms: an endpoint (URL, description, events from the catalogue, enabled)
and a secret rotation. Bounds are the REST API's (apps.webhooks.api); the services check the rest
(a URL on a public address, the event list) and their refusals are put at the field."""

from __future__ import annotations

import secrets
from typing import Any

from django import forms

from apps.webhooks.events import ALL, EVENT_TYPES
from apps.webhooks.services import MAX_GRACE_SECONDS, WebhookInvalid
from cognitionos.redis import redis_client

URL_MAX_LENGTH = 2000  # EndpointCreateInput.url
DESCRIPTION_MAX_LENGTH = 500  # EndpointCreateInput.description

# How long a sent form is remembered, so that sending it again (a reload of the answer that showed
# a secret, a double click) makes no second endpoint and no second rotation.
SUBMISSION_SECONDS = 3600

# Grace periods offered for a rotation, in seconds (the service takes 0 to MAX_GRACE_SECONDS).
GRACE_CHOICES = [
    ("0", "None: the old secret stops signing now"),
    ("3600", "1 hour"),
    ("86400", "24 hours"),
    ("259200", "3 days"),
    (str(MAX_GRACE_SECONDS), "7 days"),
]
DEFAULT_GRACE = "86400"


def event_choices() -> list[tuple[str, str]]:
    """The catalogue as checkboxes: every event, then each family (including types added later),
    then each event type with what it means."""
    families = sorted({event_type.split(".", 1)[0] for event_type in EVENT_TYPES})
    choices = [(ALL, "* — every event, including types added later")]
    for family in families:
        choices.append((f"{family}.*", f"{family}.* — every {family} event"))
        choices.extend(
            (event_type, f"{event_type} — {description}")
            for event_type, description in EVENT_TYPES.items()
            if event_type.startswith(f"{family}.")
        )
    return choices


class _SubmissionForm(forms.Form):
    """A random value per rendered form, claimed once in Redis when the form is sent."""

    submission = forms.CharField(widget=forms.HiddenInput, required=False, max_length=64)
    purpose = "form"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["submission"].initial = secrets.token_urlsafe(16)

    def _submission_key(self, organization_id: int) -> str | None:
        submission = self.cleaned_data.get("submission") or ""
        return f"portal:webhook-{self.purpose}:{organization_id}:{submission}" if submission else None

    def submission_claim(self, *, organization_id: int) -> bool:
        """False when this very form was already sent (atomic, so a double click counts once)."""
        key = self._submission_key(organization_id)
        return key is None or bool(redis_client().set(key, 1, nx=True, ex=SUBMISSION_SECONDS))

    def submission_release(self, *, organization_id: int) -> None:
        """Refused: the same form, corrected, may be sent again."""
        key = self._submission_key(organization_id)
        if key is not None:
            redis_client().delete(key)


class EndpointForm(_SubmissionForm):
    url = forms.CharField(
        label="Endpoint URL",
        max_length=URL_MAX_LENGTH,
        widget=forms.URLInput(attrs={"placeholder": "https://example.com/hooks/cognitionos", "spellcheck": "false"}),
        help_text="Where events are POSTed: an https (or http) URL on a public address.",
    )
    description = forms.CharField(
        label="Description",
        max_length=DESCRIPTION_MAX_LENGTH,
        required=False,
        help_text="Optional: what receives these events, e.g. “billing service, production”.",
    )
    events = forms.MultipleChoiceField(
        label="Events to send",
        widget=forms.CheckboxSelectMultiple,
        help_text="A test event is sent on request whatever you choose here.",
    )
    is_active = forms.BooleanField(
        label="Enabled",
        required=False,
        initial=True,
        help_text="A disabled endpoint receives nothing; its waiting deliveries fail.",
    )
    purpose = "endpoint"

    def __init__(self, *args: Any, editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["events"]
        assert isinstance(field, forms.MultipleChoiceField)
        field.choices = event_choices()
        field.error_messages["required"] = "Choose at least one event."
        if not editing:
            del self.fields["is_active"]  # a new endpoint starts enabled

    def refusal_add(self, refused: WebhookInvalid) -> None:
        """A service's refusal, at the field it names."""
        self.add_error(refused.param if refused.param in self.fields else None, str(refused))


class RotateForm(_SubmissionForm):
    grace_period_seconds = forms.TypedChoiceField(
        label="Old secret keeps signing for",
        choices=GRACE_CHOICES,
        coerce=int,
        initial=DEFAULT_GRACE,
    )
    purpose = "rotate"

    def refusal_add(self, refused: WebhookInvalid) -> None:
        self.add_error("grace_period_seconds" if refused.param == "grace_period_seconds" else None, str(refused))
