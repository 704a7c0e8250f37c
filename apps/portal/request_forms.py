"""The request log's filters: every input bounded and allowlisted, so that what reaches the ledger's
query is a value one of its indexes serves (apps.llm.request_log)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django import forms
from django.core.validators import RegexValidator

from apps.llm.calls import AttemptStatus, CallSource, LogCursor, RequestLogFilters

# Model names in the catalog (and policies: `policy:cheapest`): letters, digits and . _ : / @ + -.
_MODEL = RegexValidator(r"^[A-Za-z0-9._:/@+-]+$", "A model name has letters, digits and . _ : / @ + - only.")
# Request ids the engine makes (hex, `job-<hex>-1`, `wf-...`, `.l3` suffixes): no LIKE wildcards.
_REQUEST = RegexValidator(r"^[A-Za-z0-9._:-]+$", "A request id has letters, digits and . _ : - only.")
CACHE_CHOICES = [
    ("", "Any"),
    ("miss", "Miss (provider answered)"),
    ("l1", "L1 (process memory)"),
    ("l2", "L2 (Redis)"),
    ("l3", "L3 (semantic)"),
    ("l4", "L4 (database)"),
]
# The key filter offers the organization's newest keys, at most this many.
KEY_CHOICES_MAX = 200


class _DateTimeLocal(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self) -> None:
        super().__init__(format="%Y-%m-%dT%H:%M")


class RequestLogFilterForm(forms.Form):
    since = forms.DateTimeField(
        label="From (UTC)", required=False, widget=_DateTimeLocal(), input_formats=["%Y-%m-%dT%H:%M"]
    )
    until = forms.DateTimeField(
        label="Until (UTC)", required=False, widget=_DateTimeLocal(), input_formats=["%Y-%m-%dT%H:%M"]
    )
    model = forms.CharField(
        label="Model that answered", required=False, max_length=100, validators=[_MODEL], help_text="Exact name."
    )
    key = forms.TypedChoiceField(label="API key", required=False, coerce=int, empty_value=None)
    status = forms.ChoiceField(label="Status", required=False, choices=[("", "Any"), *AttemptStatus.choices])
    cache = forms.ChoiceField(label="Cache layer", required=False, choices=CACHE_CHOICES)
    source = forms.ChoiceField(label="Source", required=False, choices=[("", "Any"), *CallSource.choices])
    request = forms.CharField(
        label="Request id starts with",
        required=False,
        min_length=4,
        max_length=64,
        validators=[_REQUEST],
        help_text="At least 4 characters.",
    )
    # The pager's cursors (links, not inputs): a row's place, `<microseconds>.<id>`.
    older = forms.CharField(required=False, max_length=40, widget=forms.HiddenInput)
    newer = forms.CharField(required=False, max_length=40, widget=forms.HiddenInput)

    FILTERS = ("since", "until", "model", "key", "status", "cache", "source", "request")

    def __init__(self, data: Any = None, *, keys: list[tuple[int, str]]) -> None:
        super().__init__(data)
        field = self.fields["key"]
        assert isinstance(field, forms.TypedChoiceField)
        field.choices = [("", "Any"), *((str(key_id), name) for key_id, name in keys)]
        for name in ("since", "until"):
            self.fields[name].widget.attrs["max"] = "9999-12-31T23:59"

    def _clean_cursor(self, name: str) -> LogCursor | None:
        text = self.cleaned_data.get(name) or ""
        if not text:
            return None
        cursor = LogCursor.decode(text)
        if cursor is None:
            raise forms.ValidationError("This page link is not valid: start again from the first page.")
        return cursor

    def clean_older(self) -> LogCursor | None:
        return self._clean_cursor("older")

    def clean_newer(self) -> LogCursor | None:
        return self._clean_cursor("newer")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None and since >= until:
            self.add_error("until", "The end of the range comes after its start.")
        if data.get("older") is not None and data.get("newer") is not None:
            raise forms.ValidationError("A page link has one cursor, not two.")
        return data

    def filters(self) -> RequestLogFilters:
        data = self.cleaned_data
        cache = data.get("cache") or ""
        return RequestLogFilters(
            since=_utc(data.get("since")),
            until=_utc(data.get("until")),
            model=data.get("model") or "",
            api_key_id=data.get("key"),
            status=data.get("status") or "",
            cache_layer=None if not cache else ("" if cache == "miss" else cache),
            source=data.get("source") or "",
            request_prefix=data.get("request") or "",
        )

    def kept(self) -> dict[str, str]:
        """The filters as given (valid, non-empty), for the pager's links."""
        return {name: str(self.data[name]) for name in self.FILTERS if self.data.get(name)}

    def page_errors(self) -> list[str]:
        """Problems no input shows beside it: the pager's cursors, and the form's own."""
        return [str(error) for name in ("older", "newer", "__all__") for error in self.errors.get(name, [])]


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """The inputs say UTC: a naive value is taken as UTC whatever the server's zone."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def request_id_valid(text: str) -> bool:
    """A request id the detail page looks up: allowlisted characters, the ledger's length at most."""
    return 1 <= len(text) <= 64 and re.fullmatch(r"[A-Za-z0-9._:-]+", text) is not None
