"""Which models to try, in order: the one asked for and its fallbacks, or a routing policy."""

from __future__ import annotations

import logging
import math
import time
from decimal import Decimal
from functools import cache

from django.conf import settings
from redis.commands.core import Script

from apps.llm.metrics import BREAKER_OPEN
from apps.llm.platform.models import ModelKind
from apps.llm.platform.selectors import PricedModel, catalog
from apps.llm.providers import own_key_name, provider_configured
from apps.llm.traffic import TRAFFIC_TTL_S, traffic_bucket, traffic_key
from cognitionos.background_batch import BackgroundBatch
from cognitionos.redis import redis_client

logger = logging.getLogger(__name__)

POLICIES = ("cheapest", "fastest", "balanced")
_LATENCY_KEY = "llm:latency_ms:{name}"
_ERRORS_KEY = "llm:error_rate:{name}"  # "<rate>:<unix time of the last update>"
_OBSERVATION_TTL_S = 24 * 3600
_ERROR_WEIGHT = 0.2  # each attempt's share in the moving average of the error rate

# One round trip per attempt: the latency's and the error rate's moving averages, updated atomically.
# The error rate also decays with time (half-life LLM_ROUTER_ERROR_HALF_LIFE_S), so a model that the
# router stopped choosing because it failed is tried again once its failures are old. A success may
# also close the deployment's breaker (KEYS[4], its probe KEYS[5]) in the same round trip: returns 1
# if there was a breaker to close. KEYS[3] is the current traffic bucket (apps.llm.traffic): the
# attempt is counted for anomaly detection there, against the deployment (ARGV[7], '' for an
# organization's own key) and the organization's spend (ARGV[8], with the cost ARGV[9]).
_OBSERVE = """
local cleared = 0
if KEYS[4] and redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('DEL', KEYS[4], KEYS[5])
  cleared = 1
end
local failed = tonumber(ARGV[2])
local counted = false
if ARGV[7] ~= '' then
  local d = 'd|' .. ARGV[7] .. '|'
  redis.call('HINCRBY', KEYS[3], d .. 'n', 1)
  if failed == 1 then
    redis.call('HINCRBY', KEYS[3], d .. 'e', 1)
  else
    redis.call('HINCRBY', KEYS[3], d .. 's', 1)
    if ARGV[1] ~= '' then redis.call('HINCRBYFLOAT', KEYS[3], d .. 'l', ARGV[1]) end
    if ARGV[9] ~= '' then
      redis.call('HINCRBY', KEYS[3], d .. 'k', 1)
      redis.call('HINCRBYFLOAT', KEYS[3], d .. 'c', ARGV[9])
    end
  end
  counted = true
end
if ARGV[8] ~= '' and ARGV[9] ~= '' and failed == 0 then
  redis.call('HINCRBYFLOAT', KEYS[3], 'o|' .. ARGV[8], ARGV[9])
  counted = true
end
if counted then redis.call('EXPIRE', KEYS[3], ARGV[10]) end
local ttl = tonumber(ARGV[6])
if ARGV[1] ~= '' then
  local latency = tonumber(ARGV[1])
  local previous = redis.call('GET', KEYS[1])
  if previous then latency = 0.8 * tonumber(previous) + 0.2 * latency end
  redis.call('SET', KEYS[1], string.format('%.1f', latency), 'EX', ttl)
end
local raw = redis.call('GET', KEYS[2])
if (not raw) and failed == 0 then return cleared end
local now = tonumber(ARGV[3])
local rate = 0
if raw then
  local sep = string.find(raw, ':', 1, true)
  local at = tonumber(string.sub(raw, sep + 1))
  rate = tonumber(string.sub(raw, 1, sep - 1)) * 0.5 ^ (math.max(0, now - at) / tonumber(ARGV[4]))
end
local weight = tonumber(ARGV[5])
rate = rate * (1 - weight) + weight * failed
if rate < 0.001 then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], string.format('%.5f:%.3f', rate, now), 'EX', ttl)
end
return cleared
"""


class UnknownModel(LookupError):
    pass


def usable(entry: PricedModel, own_providers: frozenset[str] = frozenset()) -> bool:
    return entry.price is not None and provider_configured(entry.model, own_providers)


def expected_cost(entry: PricedModel, *, prompt_tokens: int, output_tokens: int) -> Decimal:
    assert entry.price is not None
    return entry.price.cost(input_tokens=prompt_tokens, cached_input_tokens=0, output_tokens=output_tokens)


def _decayed(raw: bytes | str, now: float) -> float:
    rate, at = (float(part) for part in (raw.decode() if isinstance(raw, bytes) else raw).split(":"))
    half_lives = max(0.0, now - at) / float(settings.LLM_ROUTER_ERROR_HALF_LIFE_S)
    return rate * math.pow(0.5, half_lives)


def observed(names: list[str], now: float | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Each model's moving averages, shared by every process: latency in ms (models with none are
    untried) and error rate from 0 to 1 (absent: no recent failures), in one round trip."""
    now = time.time() if now is None else now
    values = redis_client().mget(
        [_LATENCY_KEY.format(name=name) for name in names] + [_ERRORS_KEY.format(name=name) for name in names]
    )
    latency = {name: float(value) for name, value in zip(names, values[: len(names)], strict=True) if value}
    errors = {name: _decayed(value, now) for name, value in zip(names, values[len(names) :], strict=True) if value}
    return latency, errors


def observed_latency_ms(names: list[str]) -> dict[str, float]:
    return observed(names)[0]


@cache
def _observe_script() -> Script:
    return redis_client().register_script(_OBSERVE)


def _health_name(name: str, scope: str) -> str:
    """Whose figures: the model's for everyone, or `<model>@<scope>` for an organization's own key."""
    return f"{name}@{scope}" if scope else name


# One attempt's observation: the script's keys and arguments, and the breaker gauge's labels
# (provider, model) to zero if it closes a breaker of the platform's deployment.
Observation = tuple[list[str], list[str], tuple[str, str] | None]


def _observation(
    name: str,
    *,
    success: bool,
    latency_ms: float | None,
    now: float | None,
    scope: str,
    breaker_key: str | None,
    organization_id: int | None,
    cost_usd: Decimal | None,
    provider: str = "",
) -> Observation:
    at = time.time() if now is None else now
    deployment = "" if scope else name
    health = _health_name(name, scope)
    breaker = [breaker_key, f"{breaker_key}:probe"] if breaker_key else []
    keys = [
        _LATENCY_KEY.format(name=health),
        _ERRORS_KEY.format(name=health),
        traffic_key(traffic_bucket(at)),
        *breaker,
    ]
    args = [
        "" if latency_ms is None else str(latency_ms),
        "0" if success else "1",
        str(at),
        str(settings.LLM_ROUTER_ERROR_HALF_LIFE_S),
        str(_ERROR_WEIGHT),
        str(_OBSERVATION_TTL_S),
        deployment,
        "" if organization_id is None else str(organization_id),
        "" if cost_usd is None else str(cost_usd),
        str(TRAFFIC_TTL_S),
    ]
    return keys, args, (provider, name) if provider and breaker_key and not scope else None


def deployment_observe(
    name: str,
    *,
    success: bool,
    latency_ms: float | None = None,
    now: float | None = None,
    scope: str = "",
    breaker_key: str | None = None,
    organization_id: int | None = None,
    cost_usd: Decimal | None = None,
) -> bool:
    """Record one attempt of a model: its latency (successes) and whether it failed (provider-side
    failures only: the engine never records a request's own error). With `breaker_key` (a success)
    the deployment's breaker is closed in the same round trip; True if it had one to close. The
    attempt is also counted in the traffic bucket of `now` (apps.llm.traffic): against the platform's
    deployment (not for an organization's own key, `scope`), and with its cost (`cost_usd`) in
    `organization_id`'s spend."""
    keys, args, _ = _observation(
        name,
        success=success,
        latency_ms=latency_ms,
        now=now,
        scope=scope,
        breaker_key=breaker_key,
        organization_id=organization_id,
        cost_usd=cost_usd,
    )
    return bool(_observe_script()(keys=keys, args=args))


def _observations_write(observations: list[Observation]) -> list[Observation]:
    if len(observations) == 1:
        keys, args, _ = observations[0]
        results = [_observe_script()(keys=keys, args=args)]
    else:
        pipeline = redis_client().pipeline(transaction=False)
        for keys, args, _ in observations:
            _observe_script()(keys=keys, args=args, client=pipeline)
        results = pipeline.execute()
    for (_, _, gauge), closed in zip(observations, results, strict=True):
        if closed and gauge is not None:
            BREAKER_OPEN.labels(*gauge).set(0)
    return []


# Observations wait in the process and go to Redis in one pipeline every LLM_OBSERVE_BATCH_SECONDS:
# a call neither waits for its routing figures nor fails on them once its provider has answered.
# Dropped if Redis can't take them: the next attempts' figures replace them.
_observations: BackgroundBatch[Observation] = BackgroundBatch(
    "llm-observations",
    write=_observations_write,
    interval_s=lambda: float(settings.LLM_OBSERVE_BATCH_SECONDS),
    keep_on_failure=False,
)


def deployment_record(
    name: str,
    *,
    provider: str,
    success: bool,
    latency_ms: float | None = None,
    scope: str = "",
    breaker_key: str | None = None,
    organization_id: int | None = None,
    cost_usd: Decimal | None = None,
    at_once: bool = False,
) -> None:
    """deployment_observe, sent with the next batch, or `at_once` (and always when
    LLM_OBSERVE_BATCH_SECONDS is 0; a store error is then logged, never raised). A closed breaker of
    the platform's deployment sets its gauge to 0 when the observation is written."""
    observation = _observation(
        name,
        success=success,
        latency_ms=latency_ms,
        now=None,
        scope=scope,
        breaker_key=breaker_key,
        organization_id=organization_id,
        cost_usd=cost_usd,
        provider=provider,
    )
    if not at_once and settings.LLM_OBSERVE_BATCH_SECONDS > 0:
        _observations.add(observation)
        return
    try:
        _observations_write([observation])
    except Exception:
        # The attempt is settled and its answer is the caller's: figures the store can't take now
        # must not fail it (a half-open breaker left unclosed is probed again).
        logger.warning("the routing figures of an attempt on %s could not be written", name, exc_info=True)


def deployment_observations_flush() -> int:
    """Send the waiting observations now. Returns how many were waiting."""
    return _observations.flush()


def latency_observe(name: str, latency_ms: float) -> None:
    """A successful attempt's latency (exponentially weighted moving average, shared by every process)."""
    deployment_observe(name, success=True, latency_ms=latency_ms)


def candidates(
    *,
    model: str | None,
    policy: str | None,
    min_quality: int,
    prompt_tokens: int,
    output_tokens: int,
    own_providers: frozenset[str] = frozenset(),
    health_scope: str = "",
) -> list[PricedModel]:
    """`health_scope`: whose figures rank the deployments of the organization's own keys."""
    models = catalog()
    if model is not None:
        entry = models.get(model)
        if entry is None or entry.model.kind != ModelKind.CHAT:
            raise UnknownModel(model)
        chain = [entry] + [models[name] for name in entry.model.fallbacks if name in models]
        ordered = [c for c in chain if usable(c, own_providers) or c is entry]
    else:
        pool = [
            e
            for e in models.values()
            if e.model.kind == ModelKind.CHAT and e.model.quality_tier >= min_quality and usable(e, own_providers)
        ]
        costs = {e.model.name: expected_cost(e, prompt_tokens=prompt_tokens, output_tokens=output_tokens) for e in pool}
        if policy == "cheapest":
            return sorted(pool, key=lambda e: (costs[e.model.name], -e.model.quality_tier))
        health = {
            e.model.name: _health_name(e.model.name, health_scope if own_key_name(e.model) in own_providers else "")
            for e in pool
        }
        latency, errors = observed(list(health.values()))
        unknown = max(latency.values(), default=1000.0) * 2  # untried models go after known ones
        unhealthy = settings.LLM_ROUTER_UNHEALTHY_ERROR_RATE

        def rank(entry: PricedModel) -> tuple[bool, float]:
            # Models failing at the unhealthy rate or more go after every healthy one; among the rest,
            # latency / (1 - error rate) is the expected time to an answer when failures are retried.
            rate = errors.get(health[entry.model.name], 0.0)
            expected = latency.get(health[entry.model.name], unknown) / (1 - min(rate, 0.99))
            if policy == "balanced":
                expected *= float(costs[entry.model.name])
            return rate >= unhealthy, expected

        ordered = sorted(pool, key=rank)
    return ordered
