"""What a model accepts, so that a reservation bounds every input: the most one image can cost (the
providers' published formulas at their largest image; 0 = no images) and embedding dimensions."""

from django.db import migrations, models

# OpenAI: tile-priced models cost at most 85 + 170 x 8 tiles (an image scaled to 2048 x 768); gpt-4o-mini
# prices tiles at 2833 + 5667 each; patch-priced models cost 1536 patches x their multiplier.
# Anthropic: about 1,600 tokens for the largest image it keeps (1568 px on the long side).
IMAGE_TOKENS = {
    "gpt-5": 1_445,
    "gpt-5-mini": 2_489,
    "gpt-5-nano": 3_779,
    "gpt-4.1": 1_445,
    "gpt-4.1-mini": 2_489,
    "gpt-4.1-nano": 3_779,
    "gpt-4o": 1_445,
    "gpt-4o-mini": 48_169,
    "o4-mini": 2_642,
    "claude-opus-4-5": 1_600,
    "claude-opus-4-1": 1_600,
    "claude-sonnet-4-5": 1_600,
    "claude-sonnet-4": 1_600,
    "claude-haiku-4-5": 1_600,
    "claude-3-5-haiku": 1_600,
    "simulated-mini": 1_445,
    "simulated-pro": 1_600,
}
DIMENSIONS = {"text-embedding-3-small": 1_536, "text-embedding-3-large": 3_072, "simulated-embedding": 1_536}


def seed(apps, schema_editor):
    CatalogModel = apps.get_model("llm_platform", "CatalogModel")
    for name, tokens in IMAGE_TOKENS.items():
        CatalogModel.objects.filter(name=name).update(max_tokens_per_image=tokens)
    for name, dimensions in DIMENSIONS.items():
        CatalogModel.objects.filter(name=name).update(embedding_dimensions=dimensions)
    # An embedding model added by an operator before this migration: its dimensions are unknown, so
    # the smallest common size is assumed until someone sets it.
    CatalogModel.objects.filter(kind="embedding", embedding_dimensions=0).update(embedding_dimensions=1_536)


class Migration(migrations.Migration):
    dependencies = [("llm_platform", "0003_budget_refusal_function")]
    operations = [
        migrations.AddField(
            model_name="catalogmodel",
            name="max_tokens_per_image",
            field=models.PositiveIntegerField(
                default=0,
                help_text="The most one input image can cost, in input tokens; 0: the model accepts no images. "
                "Reservations count every image at this.",
            ),
        ),
        migrations.AddField(
            model_name="catalogmodel",
            name="embedding_dimensions",
            field=models.PositiveIntegerField(
                default=0, help_text="Embedding models: the vector's full size, the upper bound of `dimensions`."
            ),
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="catalogmodel",
            constraint=models.CheckConstraint(
                condition=models.Q(kind="chat") | models.Q(embedding_dimensions__gt=0),
                name="llm_model_embedding_dimensions_known",
            ),
        ),
    ]
