"""Forms of the Budgets, Provider keys and Model settings pages: the same bounds as the REST API
(apps.llm.api.BudgetInput) and the engine's services, checked here so that a mistake is shown at
its field with a 400 before any service runs."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

from apps.llm.calls import CHAT_POLICIES, OWN_KEY_PROVIDERS
from apps.llm.models import MAX_ALLOWED_MODELS, BudgetPeriod, BudgetScope

ORGANIZATION_TARGET = "organization"

PROVIDER_LABELS = {
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "openai_compatible": "OpenAI-compatible server",
}

POLICY_LABELS = {"cheapest": "Cheapest", "fastest": "Fastest", "balanced": "Balanced"}


class BudgetForm(forms.Form):
    """What a budget applies to is chosen from lists (the organization, a key by its name, a member
    by their email): `target` is "organization", "key:<id>" or "user:<id>"."""

    target = forms.ChoiceField(label="Applies to")
    period = forms.ChoiceField(label="Period", choices=BudgetPeriod.choices)
    # BudgetInput's bounds: 14 digits, 6 of them decimals, not negative.
    limit_usd = forms.DecimalField(
        label="Limit (USD)", max_digits=14, decimal_places=6, min_value=Decimal(0), help_text="For each period."
    )
    soft_percent = forms.IntegerField(
        label="Soft limit (% of the limit)",
        required=False,
        min_value=1,
        max_value=100,
        help_text="Optional: a warning (notification) at this share of the limit.",
    )
    hard = forms.BooleanField(label="Hard limit: refuse calls that would go past it", required=False, initial=True)

    def __init__(self, *args: Any, keys: list[tuple[int, str]], members: list[tuple[int, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        target = self.fields["target"]
        assert isinstance(target, forms.ChoiceField)
        target.choices = [
            (ORGANIZATION_TARGET, "The whole organization"),
            ("API keys", [(f"key:{pk}", f"Key: {name}") for pk, name in keys]),
            ("Members", [(f"user:{pk}", f"Member: {email}") for pk, email in members]),
        ]
        self.fields["limit_usd"].widget.attrs.update({"inputmode": "decimal", "step": "0.01"})

    def scope(self) -> tuple[str, str]:
        """(scope, scope_id) for apps.llm's budget_set."""
        target: str = self.cleaned_data["target"]
        if target == ORGANIZATION_TARGET:
            return BudgetScope.ORGANIZATION.value, ""
        kind, _, pk = target.partition(":")
        return (BudgetScope.KEY.value if kind == "key" else BudgetScope.USER.value), pk


class ProviderKeyForm(forms.Form):
    provider = forms.ChoiceField(
        label="Provider", choices=[(name, PROVIDER_LABELS[name]) for name in OWN_KEY_PROVIDERS]
    )
    # A password input, never filled back in (render_value=False): the key is not re-rendered on error.
    api_key = forms.CharField(
        label="API key",
        min_length=8,
        max_length=500,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off", "spellcheck": "false"}),
        help_text="Stored encrypted; only its last four characters are ever shown again.",
    )
    base_url = forms.CharField(
        label="Base URL (OpenAI-compatible servers only)",
        required=False,
        max_length=2000,
        widget=forms.URLInput(attrs={"placeholder": "https://llm.example.com/v1"}),
        help_text="Where the key is sent: a public https address of your server.",
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("provider") == "openai_compatible" and not cleaned.get("base_url"):
            self.add_error("base_url", "An OpenAI-compatible key needs its server's base URL.")
        elif cleaned.get("provider") in ("openai", "anthropic") and cleaned.get("base_url"):
            self.add_error("base_url", "Only an OpenAI-compatible server takes a base URL.")
        return cleaned


class ModelSettingsForm(forms.Form):
    allowed_models = forms.MultipleChoiceField(
        label="Allowed models",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every model is allowed. Calls asking for another model are refused (403).",
    )
    default_policy = forms.ChoiceField(
        label="Default policy",
        required=False,
        choices=[("", "None (a call must name a model)"), *POLICY_LABELS.items()],
        help_text='Routes calls that name no model (or "model": "default"): cheapest is the lowest expected '
        "cost, fastest the lowest observed latency, balanced weighs latency by cost.",
    )
    semantic_cache = forms.BooleanField(label="Semantic cache (answers similar prompts from cache)", required=False)
    semantic_threshold = forms.FloatField(
        label="Semantic similarity threshold",
        min_value=0.8,
        max_value=1.0,
        help_text="Cosine similarity from 0.8 to 1: higher answers only closer prompts.",
    )
    store_content = forms.BooleanField(
        label="Store prompts and answers (caches, job results, the request log's detail)", required=False
    )
    retention_days = forms.IntegerField(
        label="Retention (days)",
        min_value=1,
        max_value=3650,
        help_text="Stored prompts and answers are deleted after this many days (1 to 3650).",
    )

    def __init__(self, *args: Any, models: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert set(POLICY_LABELS) == set(CHAT_POLICIES)
        allowed = self.fields["allowed_models"]
        assert isinstance(allowed, forms.MultipleChoiceField)
        allowed.choices = [(name, name) for name in models[:MAX_ALLOWED_MODELS]]
        self.fields["semantic_threshold"].widget.attrs.update({"step": "0.01"})
