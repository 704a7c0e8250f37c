"""The catalog as launched: the main OpenAI and Anthropic models at their public list prices
(USD per million tokens, late 2025), and the simulator's models, which are labelled as simulated."""

from decimal import Decimal

from django.db import migrations

CHAT = ["tools", "vision", "json_mode"]
# name, provider, provider_model, kind, context, max_output, capabilities, tier, fallbacks, (in, cached in, out)
MODELS = [
    ("gpt-5", "openai", "gpt-5", "chat", 400_000, 128_000, CHAT, 5, ["claude-sonnet-4-5"], ("1.25", "0.125", "10")),
    ("gpt-5-mini", "openai", "gpt-5-mini", "chat", 400_000, 128_000, CHAT, 4, ["claude-haiku-4-5"], ("0.25", "0.025", "2")),
    ("gpt-5-nano", "openai", "gpt-5-nano", "chat", 400_000, 128_000, CHAT, 3, ["gpt-4.1-nano"], ("0.05", "0.005", "0.40")),
    ("gpt-4.1", "openai", "gpt-4.1", "chat", 1_047_576, 32_768, CHAT, 4, ["claude-sonnet-4-5"], ("2", "0.50", "8")),
    ("gpt-4.1-mini", "openai", "gpt-4.1-mini", "chat", 1_047_576, 32_768, CHAT, 3, ["gpt-4o-mini"], ("0.40", "0.10", "1.60")),
    ("gpt-4.1-nano", "openai", "gpt-4.1-nano", "chat", 1_047_576, 32_768, CHAT, 2, ["gpt-5-nano"], ("0.10", "0.025", "0.40")),
    ("gpt-4o", "openai", "gpt-4o", "chat", 128_000, 16_384, CHAT, 4, ["claude-sonnet-4-5"], ("2.50", "1.25", "10")),
    ("gpt-4o-mini", "openai", "gpt-4o-mini", "chat", 128_000, 16_384, CHAT, 3, ["claude-haiku-4-5"], ("0.15", "0.075", "0.60")),
    ("o4-mini", "openai", "o4-mini", "chat", 200_000, 100_000, CHAT, 4, ["gpt-5-mini"], ("1.10", "0.275", "4.40")),
    ("text-embedding-3-small", "openai", "text-embedding-3-small", "embedding", 8_191, 0, [], 3, [], ("0.02", "0", "0")),
    ("text-embedding-3-large", "openai", "text-embedding-3-large", "embedding", 8_191, 0, [], 4, [], ("0.13", "0", "0")),
    ("claude-opus-4-5", "anthropic", "claude-opus-4-5", "chat", 200_000, 64_000, CHAT, 5, ["gpt-5"], ("5", "0.50", "25")),
    ("claude-opus-4-1", "anthropic", "claude-opus-4-1", "chat", 200_000, 32_000, CHAT, 5, ["claude-opus-4-5"], ("15", "1.50", "75")),
    ("claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5", "chat", 200_000, 64_000, CHAT, 5, ["gpt-5"], ("3", "0.30", "15")),
    ("claude-sonnet-4", "anthropic", "claude-sonnet-4-0", "chat", 200_000, 64_000, CHAT, 4, ["gpt-4.1"], ("3", "0.30", "15")),
    ("claude-haiku-4-5", "anthropic", "claude-haiku-4-5", "chat", 200_000, 64_000, CHAT, 3, ["gpt-5-mini"], ("1", "0.10", "5")),
    ("claude-3-5-haiku", "anthropic", "claude-3-5-haiku-latest", "chat", 200_000, 8_192, CHAT, 2, ["gpt-4o-mini"], ("0.80", "0.08", "4")),
    ("simulated-mini", "simulator", "simulated-mini", "chat", 128_000, 16_384, CHAT, 2, [], ("0.15", "0.075", "0.60")),
    ("simulated-pro", "simulator", "simulated-pro", "chat", 200_000, 32_000, CHAT, 4, ["simulated-mini"], ("3", "0.30", "15")),
    ("simulated-embedding", "simulator", "simulated-embedding", "embedding", 8_191, 0, [], 3, [], ("0.02", "0", "0")),
]


def seed(apps, schema_editor):
    CatalogModel = apps.get_model("llm_platform", "CatalogModel")
    ModelPrice = apps.get_model("llm_platform", "ModelPrice")
    for name, provider, provider_model, kind, context, max_output, caps, tier, fallbacks, price in MODELS:
        model, _ = CatalogModel.objects.update_or_create(
            name=name,
            defaults={
                "provider": provider, "provider_model": provider_model, "kind": kind, "context_window": context,
                "max_output_tokens": max_output, "capabilities": caps, "quality_tier": tier, "fallbacks": fallbacks,
            },
        )
        if not ModelPrice.objects.filter(model=model).exists():
            ModelPrice.objects.create(
                model=model, version=1, input_per_mtok=Decimal(price[0]),
                cached_input_per_mtok=Decimal(price[1]), output_per_mtok=Decimal(price[2]),
            )


class Migration(migrations.Migration):
    dependencies = [("llm_platform", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
