"""Per-interval traffic counters of the shared deployments and of organizations' spend, for anomaly
detection (apps.ops.anomaly_tasks).

The router's observation script (apps.llm.router.deployment_observe) adds to them in the round trip
every settled attempt already makes: one Redis hash per TRAFFIC_BUCKET_S of wall-clock time, kept
TRAFFIC_TTL_S, with fields

    d|<model>|n  attempts counted against the deployment (successes and provider-side failures only:
                 a request's own error is never counted, as for breakers)
    d|<model>|e  provider-side failures
    d|<model>|s  successes;  d|<model>|l  the sum of their latency, ms
    d|<model>|k  successes with a cost;  d|<model>|c  the sum of that cost, USD
    o|<organization id>  the organization's cost of successful attempts, USD

Only the platform's deployments are counted per deployment (an organization's own key has its own
breaker and health figures, and its failures are nobody else's); every organization's spend is
counted, whoever's key paid.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from cognitionos.redis import redis_client

TRAFFIC_BUCKET_S = 15
TRAFFIC_TTL_S = 3600
_TRAFFIC_KEY = "llm:traffic:{bucket}"
MAX_BUCKETS_READ = 240  # an hour: older buckets are gone anyway


def traffic_key(bucket: int) -> str:
    return _TRAFFIC_KEY.format(bucket=bucket)


def traffic_bucket(now: float | None = None) -> int:
    """The number of the bucket `now` falls in (buckets count from the Unix epoch)."""
    return int((time.time() if now is None else now) // TRAFFIC_BUCKET_S)


@dataclass
class DeploymentTraffic:
    attempts: int = 0
    errors: int = 0
    successes: int = 0
    latency_ms_sum: float = 0.0
    costed: int = 0
    cost_usd_sum: float = 0.0


@dataclass
class TrafficBucket:
    number: int
    deployments: dict[str, DeploymentTraffic] = field(default_factory=dict)
    spend_usd: dict[int, float] = field(default_factory=dict)  # organization id -> USD

    @property
    def end(self) -> float:
        return float((self.number + 1) * TRAFFIC_BUCKET_S)


_FIELDS = {"n": "attempts", "e": "errors", "s": "successes", "l": "latency_ms_sum", "k": "costed", "c": "cost_usd_sum"}


def _parse(number: int, raw: dict[bytes, bytes]) -> TrafficBucket:
    bucket = TrafficBucket(number=number)
    deployments: dict[str, DeploymentTraffic] = defaultdict(DeploymentTraffic)
    for key, value in raw.items():
        name = key.decode()
        if name.startswith("o|"):
            try:
                bucket.spend_usd[int(name[2:])] = float(value)
            except ValueError:
                continue
        elif name.startswith("d|"):
            model, _, part = name[2:].rpartition("|")
            attribute = _FIELDS.get(part)
            if not model or attribute is None:
                continue
            number_type = float if attribute.endswith("_sum") else int
            setattr(deployments[model], attribute, number_type(float(value)))
    bucket.deployments = dict(deployments)
    return bucket


def traffic_buckets(*, first: int, last: int) -> list[TrafficBucket]:
    """The buckets `first`..`last` (inclusive; at most MAX_BUCKETS_READ, the latest kept), in one
    round trip. A bucket nobody wrote is returned empty."""
    first = max(first, last - MAX_BUCKETS_READ + 1)
    numbers = list(range(first, last + 1))
    if not numbers:
        return []
    pipe = redis_client().pipeline(transaction=False)
    for number in numbers:
        pipe.hgetall(traffic_key(number))
    return [_parse(number, raw) for number, raw in zip(numbers, pipe.execute(), strict=True)]
