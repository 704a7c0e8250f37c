"""The LLM engine's tenant-schema half: usage ledger, budgets with their holds, durable cache."""

from decimal import Decimal

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models.functions import Length, Now
from django.db.models.lookups import LessThanOrEqual
from pgvector.django import HnswIndex, VectorField

# The semantic cache's vectors: the dimensions of the embedding models it uses (OpenAI
# text-embedding-3-small, the simulator's embedding model). Answers from a model with other
# dimensions are not cached semantically.
SEMANTIC_DIMENSIONS = 1536


class AttemptStatus(models.TextChoices):
    RESERVED = "reserved", "Reserved (call in flight)"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SWEPT = "swept", "Settled by the sweeper from its reservation"
    CACHE_HIT = "cache_hit", "Served from cache"


class CallSource(models.TextChoices):
    """Which entry point a governed call came through (the request log's "source")."""

    GATEWAY = "gateway", "Gateway /v1/chat/completions"
    MESSAGES = "messages", "Gateway /v1/messages (Anthropic)"
    EMBEDDINGS = "embeddings", "Gateway /v1/embeddings"
    JOB = "job", "Job"
    WORKFLOW_STEP = "workflow_step", "Workflow step"
    RETRIEVAL = "retrieval", "Knowledge retrieval (embedding)"
    KNOWLEDGE_INGESTION = "knowledge_ingestion", "Knowledge ingestion (embedding)"
    SEMANTIC_CACHE = "semantic_cache", "Semantic cache lookup (embedding)"
    PLAYGROUND = "playground", "Playground"
    OTHER = "other", "Other"


class UsageAttempt(models.Model):
    """One provider attempt (or one cache hit): written with its reservation before the call,
    settled after it. Unique per request and attempt, so a redelivered job can't bill twice."""

    request_id = models.CharField(max_length=64)
    attempt = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=20, choices=AttemptStatus.choices, default=AttemptStatus.RESERVED)
    created_at = models.DateTimeField(db_default=Now())
    settled_at = models.DateTimeField(null=True, blank=True)
    hold_expires_at = models.DateTimeField(null=True, blank=True)
    principal_kind = models.CharField(max_length=20)
    principal_id = models.CharField(max_length=64, blank=True, default="")
    principal_label = models.CharField(max_length=254, blank=True, default="")
    api_key_id = models.BigIntegerField(null=True, blank=True)
    user_id = models.BigIntegerField(null=True, blank=True)
    model_name = models.CharField(max_length=100, help_text="The model this attempt called (that answered).")
    # What the caller asked for: a model name, or `policy:<name>` (the router chose model_name).
    model_requested = models.CharField(max_length=120, blank=True, default="", db_default="")
    source = models.CharField(max_length=20, choices=CallSource.choices, blank=True, default="", db_default="")
    provider = models.CharField(max_length=30)
    paid_by = models.CharField(max_length=20, default="platform")
    input_tokens = models.PositiveIntegerField(default=0)
    cached_input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    reserved_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal(0))
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal(0))
    saved_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal(0))
    price_version = models.PositiveIntegerField(null=True, blank=True)
    cache_layer = models.CharField(max_length=4, blank=True, default="")
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error_class = models.CharField(max_length=100, blank=True, default="")
    # Whether this settled row has been added to the public UsageRollup (by usage_fold, off the
    # request path): marked in the same statement that adds it, so it is counted exactly once.
    rolled_up = models.BooleanField(default=False, db_default=False)
    # When Stripe accepted this settled row's meter event (apps.billing.metering), or when the push
    # decided it bills nothing (own key, zero cost, before metering began). Null: not yet. Set only
    # after Stripe answered, so a push that dies resends it (Stripe drops the repeat by identifier).
    metered_at = models.DateTimeField(null=True, blank=True)
    # Not stored: set by attempt_reserve when a hard limit of the attempt's budgets was more than
    # half taken at its reservation, so that its settlement does not wait for a batch (apps.llm.budgets).
    near_a_hard_limit = False

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["request_id", "attempt"], name="llm_attempt_unique"),
            models.CheckConstraint(
                condition=models.Q(status__in=AttemptStatus.values), name="llm_attempt_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(cost_usd__gte=0, reserved_usd__gte=0, saved_usd__gte=0),
                name="llm_attempt_amounts_not_negative",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "hold_expires_at"], name="llm_attempt_open_holds"),
            # The request log (apps.portal.requests_pages): newest first by (created_at, id), each
            # selective filter with an index of its own that gives the rows in that order, so that a
            # page reads ~51 index entries whatever the ledger's size. Statuses other than
            # `succeeded` (the rare ones) and cache hits are partial indexes: a filter on the common
            # value walks the time index instead, where nearly every row matches.
            models.Index(fields=["created_at", "id"], name="llm_attempt_log_time"),
            models.Index(
                fields=["status", "created_at", "id"],
                condition=~models.Q(status="succeeded"),
                name="llm_attempt_log_status",
            ),
            models.Index(fields=["model_name", "created_at", "id"], name="llm_attempt_log_model"),
            models.Index(
                fields=["api_key_id", "created_at", "id"],
                condition=models.Q(api_key_id__isnull=False),
                name="llm_attempt_log_key",
            ),
            models.Index(
                fields=["cache_layer", "created_at", "id"],
                condition=~models.Q(cache_layer=""),
                name="llm_attempt_log_cache",
            ),
            models.Index(fields=["source", "created_at", "id"], name="llm_attempt_log_source"),
            # Prefix search on the request id (LIKE 'abc%'), whatever the database's collation.
            models.Index(fields=["request_id"], opclasses=["varchar_pattern_ops"], name="llm_attempt_log_request"),
            # What the rollup fold has left to do: small, whatever the ledger's size.
            models.Index(
                fields=["id"],
                condition=models.Q(rolled_up=False) & ~models.Q(status="reserved"),
                name="llm_attempt_unrolled",
            ),
            # What the meter push has left to send: small, whatever the ledger's size.
            models.Index(
                fields=["id"],
                condition=models.Q(metered_at__isnull=True) & ~models.Q(status="reserved"),
                name="llm_attempt_unmetered",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.request_id}#{self.attempt} {self.status}"


# What one call's stored prompt or answer may hold, in characters: past it, the text is cut.
CALL_CONTENT_MAX_CHARS = 32_000


class CallContent(models.Model):
    """A call's prompt and answer, for the request log's detail: written with the settlement (or the
    cache hit's ledger row) only while the organization's content policy keeps content, deleted by
    the content-retention sweep (apps.llm.services.llm_content_sweep), all of it when the policy
    turns content off."""

    request_id = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(db_default=Now(), db_index=True)
    prompt = models.TextField(help_text="The messages sent, as JSON (cut at CALL_CONTENT_MAX_CHARS).")
    answer = models.TextField(blank=True, default="")
    truncated = models.BooleanField(default=False, db_default=False)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=LessThanOrEqual(Length("prompt"), CALL_CONTENT_MAX_CHARS),
                name="llm_callcontent_prompt_bounded",
            ),
            models.CheckConstraint(
                condition=LessThanOrEqual(Length("answer"), CALL_CONTENT_MAX_CHARS),
                name="llm_callcontent_answer_bounded",
            ),
        ]

    def __str__(self) -> str:
        return f"content of {self.request_id}"


class BudgetScope(models.TextChoices):
    ORGANIZATION = "organization", "Organization"
    USER = "user", "User"
    KEY = "key", "API key"


class BudgetPeriod(models.TextChoices):
    DAY = "day", "Day (UTC)"
    MONTH = "month", "Month (UTC)"


class Budget(models.Model):
    scope = models.CharField(max_length=20, choices=BudgetScope.choices)
    scope_id = models.CharField(
        max_length=64, blank=True, default="", help_text="User or key id; empty for the organization."
    )
    period = models.CharField(max_length=10, choices=BudgetPeriod.choices)
    limit_usd = models.DecimalField(max_digits=14, decimal_places=6)
    soft_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    hard = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "scope_id", "period"], name="llm_budget_unique"),
            models.CheckConstraint(condition=models.Q(limit_usd__gte=0), name="llm_budget_limit_not_negative"),
            models.CheckConstraint(
                condition=models.Q(soft_percent__isnull=True) | models.Q(soft_percent__gte=1, soft_percent__lte=100),
                name="llm_budget_soft_percent_range",
            ),
            models.CheckConstraint(
                condition=models.Q(scope="organization", scope_id="")
                | ~models.Q(scope="organization") & ~models.Q(scope_id=""),
                name="llm_budget_scope_id_matches_scope",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scope}:{self.scope_id or '-'} {self.period} ${self.limit_usd}"


class BudgetWindow(models.Model):
    """A budget's spend in one period (a UTC day or month): settled spend plus open reservations."""

    # db_index=False: llm_window_unique (budget, period_start) serves lookups by budget.
    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="windows", db_index=False)
    period_start = models.DateField()
    spent_usd = models.DecimalField(max_digits=16, decimal_places=8, default=Decimal(0))
    reserved_usd = models.DecimalField(max_digits=16, decimal_places=8, default=Decimal(0))
    soft_notified = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["budget", "period_start"], name="llm_window_unique"),
            models.CheckConstraint(
                condition=models.Q(spent_usd__gte=0, reserved_usd__gte=0), name="llm_window_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"budget {self.budget_id} from {self.period_start}"


class BudgetHold(models.Model):
    """The part of a window one attempt has reserved. When the attempt settles, its cost is written
    here; the hold, still counted at its amount, then waits for the fold (apps.llm.budgets) that
    moves it into the window's spend, so that settling never waits for the window's row."""

    # db_index=False: llm_hold_unique (attempt, window) serves lookups by attempt.
    attempt = models.ForeignKey(UsageAttempt, on_delete=models.CASCADE, related_name="holds", db_index=False)
    window = models.ForeignKey(BudgetWindow, on_delete=models.CASCADE, related_name="holds")
    amount_usd = models.DecimalField(max_digits=14, decimal_places=8)
    settled_cost_usd = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["attempt", "window"], name="llm_hold_unique"),
            models.CheckConstraint(
                condition=models.Q(settled_cost_usd__isnull=True) | models.Q(settled_cost_usd__gte=0),
                name="llm_hold_settled_cost_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"hold of ${self.amount_usd} for attempt {self.attempt_id}"


class CachedResponse(models.Model):
    """L4: the durable exact cache of complete, successful answers."""

    key = models.CharField(max_length=64, unique=True)
    model_name = models.CharField(max_length=100)
    response = models.JSONField()
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal(0))
    created_at = models.DateTimeField(db_default=Now())
    # Not indexed: reads go by key; the sweep (apps.llm.caching) filters expired OR old rows.
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.model_name} {self.key[:12]}"


class SemanticCacheEntry(models.Model):
    """L3: an answer found by the similarity of the prompt's embedding, for single-turn, temperature-0
    requests. `context_hash` covers everything except the user's text (model, system message, tools,
    response format, every other parameter), so an entry only matches a request that differs from
    its own in the user's words alone."""

    model_name = models.CharField(max_length=100, help_text="The model (or policy) the request asked for.")
    context_hash = models.CharField(max_length=64)
    embedding = VectorField(dimensions=SEMANTIC_DIMENSIONS)
    response = models.JSONField()
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal(0))
    created_at = models.DateTimeField(db_default=Now())
    # Not indexed alone: reads use llm_semantic_context; the sweep filters expired OR old rows.
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["context_hash", "model_name", "expires_at"], name="llm_semantic_context"),
            HnswIndex(
                name="llm_semantic_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_name} {self.context_hash[:12]}"


# The routing policies an organization may choose as its default (apps.llm.router.POLICIES, which
# imports the catalog and can't be imported by models).
DEFAULT_POLICIES = ("cheapest", "fastest", "balanced")
MAX_ALLOWED_MODELS = 200


class LlmSettings(models.Model):
    """The organization's engine settings: one row (id 1) in its schema, created on first change."""

    semantic_cache = models.BooleanField(
        default=False, help_text="Allow the semantic cache (L3); each request opts in too."
    )
    semantic_threshold = models.FloatField(
        default=0.95, help_text="Cosine similarity an L3 entry needs to answer (0.8 to 1)."
    )
    store_content = models.BooleanField(
        default=True, help_text="Off: no prompt or answer is stored anywhere (no caches); only counts and costs."
    )
    retention_days = models.PositiveIntegerField(
        default=30, help_text="Stored prompts and answers (caches, job results) are deleted after this many days."
    )
    # Which catalog models the organization's calls may use (by name); empty: every model. Checked
    # by the engine before any work (403 model_not_allowed), and a policy picks only among them.
    allowed_models = ArrayField(models.CharField(max_length=100), default=list, blank=True, size=MAX_ALLOWED_MODELS)
    # The policy a call without a model (or with `"model": "default"`) is routed by; empty: such a
    # call is refused (400 model_required), as before the setting existed.
    default_policy = models.CharField(max_length=20, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)
    updated_by_label = models.CharField(max_length=254, blank=True, default="")

    class Meta:
        verbose_name_plural = "LLM settings"
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="llm_settings_singleton"),
            models.CheckConstraint(
                condition=models.Q(default_policy__in=("", *DEFAULT_POLICIES)), name="llm_settings_default_policy_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(allowed_models__len__lte=MAX_ALLOWED_MODELS),
                name="llm_settings_allowed_models_bounded",
            ),
            models.CheckConstraint(
                condition=models.Q(semantic_threshold__gte=0.8, semantic_threshold__lte=1),
                name="llm_settings_threshold_range",
            ),
            models.CheckConstraint(
                condition=models.Q(retention_days__gte=1, retention_days__lte=3650),
                name="llm_settings_retention_range",
            ),
        ]

    def __str__(self) -> str:
        return "LLM settings"


class ProviderCredential(models.Model):
    """The organization's own key for a provider (bring your own key), encrypted at rest."""

    provider = models.CharField(max_length=30, unique=True)
    key_id = models.CharField(max_length=40)
    nonce = models.BinaryField()
    ciphertext = models.BinaryField()
    hint = models.CharField(max_length=12, help_text="The key's last characters, to recognise it.")
    base_url = models.URLField(
        max_length=2000, blank=True, default="", help_text="OpenAI-compatible servers: where the key is sent."
    )
    created_by_label = models.CharField(max_length=254, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(provider="openai_compatible") & ~models.Q(base_url="")
                | ~models.Q(provider="openai_compatible") & models.Q(base_url=""),
                name="llm_credential_base_url_for_compatible",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider} key …{self.hint}"
