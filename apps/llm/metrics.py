"""Prometheus metrics of the LLM engine. Labels are bounded (provider, model, status, cache layer):
no organization or key ids, so the series count does not grow with tenants."""

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "cognitionos_llm_requests_total", "Provider attempts and cache hits", ["provider", "model", "status", "cache"]
)
LATENCY = Histogram(
    "cognitionos_llm_provider_latency_seconds",
    "Provider call latency",
    ["provider", "model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
TOKENS = Counter("cognitionos_llm_tokens_total", "Tokens billed", ["model", "direction"])
COST = Counter("cognitionos_llm_cost_usd_total", "Provider cost charged, USD", ["model"])
OVERRUNS = Counter(
    "cognitionos_llm_overruns_total",
    "Attempts whose reported usage cost more than their reservation (charged in full)",
    ["provider", "model"],
)
SAVED = Counter("cognitionos_llm_saved_usd_total", "Cost saved by cache hits, USD", ["model"])
# In multiprocess mode (PROMETHEUS_MULTIPROC_DIR) gauges say how processes combine: open holds add
# up over the live processes; the breaker's state is the one last written by any process.
OPEN_HOLDS = Gauge(
    "cognitionos_llm_budget_holds_open",
    "Budget reservations not yet settled (live processes)",
    multiprocess_mode="livesum",
)
HOLDS_SWEPT = Counter(
    "cognitionos_llm_budget_holds_swept_total",
    "Holds left by a process that died, settled by the sweeper from their reservation",
)
BREAKER_OPEN = Gauge(
    "cognitionos_llm_breaker_open",
    "1 while the breaker of a provider and model is open",
    ["provider", "model"],
    multiprocess_mode="mostrecent",
)
