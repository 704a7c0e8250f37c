"""The LLM engine: platform provider credentials (the SDKs' own variables), limits, the simulator."""

from .env import env_int, env_str

OPENAI_API_KEY = env_str("OPENAI_API_KEY", "")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL", "")
ANTHROPIC_API_KEY = env_str("ANTHROPIC_API_KEY", "")
ANTHROPIC_BASE_URL = env_str("ANTHROPIC_BASE_URL", "")
# Any OpenAI-compatible server (Ollama, vLLM, LM Studio) is a catalog model with a base URL.
OPENAI_COMPATIBLE_API_KEY = env_str("OPENAI_COMPATIBLE_API_KEY", "")

LLM_SIMULATOR_LATENCY_MS = env_int("LLM_SIMULATOR_LATENCY_MS", 0)
LLM_SIMULATOR_FAILURE_RATE = float(env_str("LLM_SIMULATOR_FAILURE_RATE", "0"))

LLM_PROVIDER_TIMEOUT_S = float(env_str("LLM_PROVIDER_TIMEOUT_S", "120"))
LLM_MAX_ATTEMPTS = env_int("LLM_MAX_ATTEMPTS", 3)  # per model, before falling back to the next
LLM_RETRY_BASE_S = float(env_str("LLM_RETRY_BASE_S", "0.5"))
LLM_RETRY_MAX_S = float(env_str("LLM_RETRY_MAX_S", "20"))
# A reservation outlives its call by at most this long before the sweeper settles it.
LLM_HOLD_SECONDS = env_int("LLM_HOLD_SECONDS", 900)
LLM_CACHE_TTL_S = env_int("LLM_CACHE_TTL_S", 24 * 3600)
LLM_L1_CACHE_ENTRIES = env_int("LLM_L1_CACHE_ENTRIES", 2048)
# The embedding model of the semantic cache (L3); empty: text-embedding-3-small if OpenAI is
# configured, else the simulator's. Its vectors must have 1536 dimensions.
LLM_SEMANTIC_EMBEDDING_MODEL = env_str("LLM_SEMANTIC_EMBEDDING_MODEL", "")
LLM_MAX_REQUEST_BYTES = env_int("LLM_MAX_REQUEST_BYTES", 4 * 1024 * 1024)
# Responses that hold a web thread (model streams, job and run events) share one cap per process,
# below its thread count (WEB_THREADS, as cognitionos.web reads it), so short requests always find a thread.
_WEB_THREADS = env_int("WEB_THREADS", 8)
LONG_RESPONSES_PER_PROCESS = max(1, min(env_int("LONG_RESPONSES_PER_PROCESS", _WEB_THREADS - 2), _WEB_THREADS - 1))
# Circuit breaker per provider and model, shared through Redis.
LLM_BREAKER_FAILURES = env_int("LLM_BREAKER_FAILURES", 5)
LLM_BREAKER_COOLDOWN_S = env_int("LLM_BREAKER_COOLDOWN_S", 30)
# Routing policies (fastest, balanced) put a model whose recent error rate (a moving average that
# halves every LLM_ROUTER_ERROR_HALF_LIFE_S without new failures) reaches this after healthy ones.
LLM_ROUTER_UNHEALTHY_ERROR_RATE = float(env_str("LLM_ROUTER_UNHEALTHY_ERROR_RATE", "0.3"))
LLM_ROUTER_ERROR_HALF_LIFE_S = float(env_str("LLM_ROUTER_ERROR_HALF_LIFE_S", "120"))
# Soft budget limits call this hook (dotted path to f(organization, budget, window)) besides the audit event.
LLM_SOFT_LIMIT_HOOK = env_str("LLM_SOFT_LIMIT_HOOK", "")
# /metrics on the platform host requires `Authorization: Bearer <METRICS_TOKEN>`; unset, it is open,
# which only development and tests allow (production settings refuse to load without it).
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# Organizations' own provider keys are stored encrypted (AES-256-GCM) under these keys:
# "id:base64(32 bytes)", comma-separated, the first one current. Required in production.
CREDENTIALS_ENCRYPTION_KEYS = env_str("CREDENTIALS_ENCRYPTION_KEYS", "")
# Cache hits are written to the ledger in batches this often (0: at once, as the tests do).
LLM_HIT_BATCH_SECONDS = float(env_str("LLM_HIT_BATCH_SECONDS", "0.25"))
# Each provider attempt's routing figures (latency, error rate, traffic counters) go to Redis in
# batches this often (0: at once, as the tests do). A half-open breaker's probe is observed at once.
LLM_OBSERVE_BATCH_SECONDS = float(env_str("LLM_OBSERVE_BATCH_SECONDS", "0.1"))
# A gateway call's answer goes out before its ledger row is settled: the settlements are written in
# batches this often (0: at once, as the tests do). A process that dies first leaves its holds to the
# sweeper, which charges their reservations. Calls near a hard limit, jobs and steps settle at once.
LLM_SETTLE_BATCH_SECONDS = float(env_str("LLM_SETTLE_BATCH_SECONDS", "0.05"))
# A settled call's cost reaches its budget windows' spend in a fold this often after its commit
# (0: at once, in the settling transaction, as the tests do); until then its hold still counts.
LLM_BUDGET_FOLD_SECONDS = float(env_str("LLM_BUDGET_FOLD_SECONDS", "0.1"))

# Hour buckets of usage are read by the dashboard's ranges up to 7 days; kept this long, then
# deleted (day buckets are kept).
USAGE_HOUR_BUCKETS_DAYS = env_int("USAGE_HOUR_BUCKETS_DAYS", 35)
