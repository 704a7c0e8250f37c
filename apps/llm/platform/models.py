from decimal import Decimal

from django.contrib.postgres.fields import ArrayField
from django.db import models


class Provider(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"
    OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible server"
    SIMULATOR = "simulator", "Simulator (simulated answers)"


class ModelKind(models.TextChoices):
    CHAT = "chat", "Chat"
    EMBEDDING = "embedding", "Embeddings"


class CatalogModel(models.Model):
    """A model clients may ask for by `name`, served by one provider."""

    name = models.CharField(max_length=100, unique=True, help_text="The id clients send as `model`.")
    provider = models.CharField(max_length=30, choices=Provider.choices)
    provider_model = models.CharField(max_length=100, help_text="The model's name at the provider.")
    base_url = models.URLField(blank=True, default="", help_text="For OpenAI-compatible servers.")
    kind = models.CharField(max_length=20, choices=ModelKind.choices, default=ModelKind.CHAT)
    context_window = models.PositiveIntegerField()
    max_output_tokens = models.PositiveIntegerField()
    capabilities = models.JSONField(default=list, blank=True, help_text="Any of: tools, vision, json_mode.")
    max_tokens_per_image = models.PositiveIntegerField(
        default=0,
        help_text="The most one input image can cost, in input tokens; 0: the model accepts no images. "
        "Reservations count every image at this.",
    )
    embedding_dimensions = models.PositiveIntegerField(
        default=0, help_text="Embedding models: the vector's full size, the upper bound of `dimensions`."
    )
    quality_tier = models.PositiveSmallIntegerField(help_text="1 (basic) to 5 (frontier).")
    fallbacks = models.JSONField(default=list, blank=True, help_text="Model names to try, in order, if this fails.")
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ("name",)
        constraints = [
            models.CheckConstraint(
                condition=models.Q(quality_tier__gte=1, quality_tier__lte=5), name="llm_model_tier_1_5"
            ),
            models.CheckConstraint(condition=models.Q(provider__in=Provider.values), name="llm_model_provider_valid"),
            models.CheckConstraint(
                condition=models.Q(kind=ModelKind.CHAT) | models.Q(embedding_dimensions__gt=0),
                name="llm_model_embedding_dimensions_known",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_simulated(self) -> bool:
        return self.provider == Provider.SIMULATOR

    @property
    def accepts_images(self) -> bool:
        return self.max_tokens_per_image > 0


class ModelPrice(models.Model):
    """A version of a model's price, in USD per million tokens. Ledger rows name the version used."""

    model = models.ForeignKey(CatalogModel, on_delete=models.PROTECT, related_name="prices")
    version = models.PositiveIntegerField()
    input_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    cached_input_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    output_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("model", "-version")
        constraints = [
            models.UniqueConstraint(fields=["model", "version"], name="llm_price_version_unique"),
            models.CheckConstraint(
                condition=models.Q(input_per_mtok__gte=0, cached_input_per_mtok__gte=0, output_per_mtok__gte=0),
                name="llm_price_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_id} v{self.version}"

    def cost(self, *, input_tokens: int, cached_input_tokens: int, output_tokens: int) -> Decimal:
        uncached = max(0, input_tokens - cached_input_tokens)
        return (
            uncached * self.input_per_mtok
            + cached_input_tokens * self.cached_input_per_mtok
            + output_tokens * self.output_per_mtok
        ) / Decimal(1_000_000)


class UsageRollup(models.Model):
    """Per organization, UTC day, model and key: what billing, dashboards and operators read."""

    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="usage_rollups")
    day = models.DateField()
    model_name = models.CharField(max_length=100)
    api_key_id = models.BigIntegerField(default=0, help_text="0: not through an API key.")
    requests = models.PositiveBigIntegerField(default=0)
    cache_hits = models.PositiveBigIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=18, decimal_places=8, default=Decimal(0))
    saved_usd = models.DecimalField(max_digits=18, decimal_places=8, default=Decimal(0))

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "day", "model_name", "api_key_id"], name="llm_rollup_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.day} {self.model_name}"


# The latency histogram of a UsageBucket: slot i counts latencies (ms) from LATENCY_SLOT_FLOORS_MS[i]
# up to the next floor (the last slot has no end). Floors grow by about sqrt(2), so a percentile read
# from summed histograms is within about 20% of the exact one, and histograms add up across rows,
# hours and days, which percentiles themselves don't. Fixed: rows already written use these slots.
LATENCY_SLOT_FLOORS_MS: tuple[int, ...] = (
    0, 1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181,
    256, 362, 512, 724, 1024, 1448, 2048, 2896, 4096, 5792, 8192, 11585, 16384, 23170, 32768, 46341,
)  # fmt: skip
LATENCY_SLOTS = len(LATENCY_SLOT_FLOORS_MS)


class UsageSpan(models.TextChoices):
    HOUR = "hour", "Hour (UTC)"
    DAY = "day", "Day (UTC)"
    # The organization's whole hour or day (model "", key 0, user 0): a range's series reads one row
    # per point instead of adding up every model, key and user of it.
    HOUR_TOTAL = "hour_total", "Hour (UTC), all together"
    DAY_TOTAL = "day_total", "Day (UTC), all together"


TOTAL_SPANS = {UsageSpan.HOUR: UsageSpan.HOUR_TOTAL, UsageSpan.DAY: UsageSpan.DAY_TOTAL}


def _empty_histogram() -> list[int]:
    return [0] * LATENCY_SLOTS


class UsageBucket(models.Model):
    """Per organization, UTC hour or day, model, API key and user: what the portal's dashboard reads
    (a range's series and breakdowns are one indexed read, never a scan of the ledger). Filled by
    the same fold statement as UsageRollup, from the same ledger rows: each row is added once to
    its hour and once to its day (short ranges read hours, long ranges days), and once to each of
    their totals (the *_total spans)."""

    organization = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="usage_buckets")
    span = models.CharField(max_length=10, choices=UsageSpan.choices)
    start = models.DateTimeField(help_text="The hour's or the day's start (UTC).")
    model_name = models.CharField(max_length=100)
    api_key_id = models.BigIntegerField(default=0, help_text="0: not through an API key.")
    user_id = models.BigIntegerField(default=0, help_text="0: not on behalf of a person (an API key).")
    requests = models.PositiveBigIntegerField(default=0, help_text="Answered: provider successes and cache hits.")
    cache_hits = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0, help_text="Failed attempts (and holds the sweeper settled).")
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=18, decimal_places=8, default=Decimal(0))
    saved_usd = models.DecimalField(max_digits=18, decimal_places=8, default=Decimal(0))
    latency_histogram = ArrayField(
        models.BigIntegerField(),
        size=LATENCY_SLOTS,
        default=_empty_histogram,
        help_text="Answered requests' latencies by slot (LATENCY_SLOT_FLOORS_MS).",
    )

    class Meta:
        constraints = [
            # Also the dashboard's index: one organization's span over a time range.
            models.UniqueConstraint(
                fields=["organization", "span", "start", "model_name", "api_key_id", "user_id"],
                name="llm_bucket_unique",
            ),
            models.CheckConstraint(condition=models.Q(span__in=UsageSpan.values), name="llm_bucket_span_valid"),
            models.CheckConstraint(
                condition=models.Q(span__in=[UsageSpan.HOUR, UsageSpan.DAY])
                | models.Q(model_name="", api_key_id=0, user_id=0),
                name="llm_bucket_total_has_no_dimensions",
            ),
            models.CheckConstraint(
                condition=models.Q(latency_histogram__len=LATENCY_SLOTS), name="llm_bucket_histogram_slots"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.span} {self.start:%Y-%m-%d %H:00} {self.model_name}"
