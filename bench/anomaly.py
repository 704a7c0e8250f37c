"""Anomaly detection figures: synthetic series with injected incidents, replayed through the
detector the beat task uses (apps.ops.anomaly.series_step, the same thresholds).

    .venv/bin/python bench/anomaly.py [--trials 200] [--clean 100] [--seed 7]

Simulated traffic, per deployment one sample per 15 s bucket (as apps.ops.tasks reads Redis):
requests per bucket Poisson(20) (a quiet deployment: Poisson(3)), each with a log-normal latency
(median 800 ms, sigma 0.5) and cost (median $0.002, sigma 0.6), 1 % provider errors; per
organization one spend sample per 30 s (two buckets): Poisson(30) requests a minute with heavy-tailed costs
(log-normal sigma 0.8, median $0.01) and a slow daily swing of +-30 %.

Injected after an hour of normal traffic (at a random time in the next 30 minutes):
- latency step: every request 2x slower from then on;
- error burst: 30 % of attempts fail for 5 minutes;
- slow drift: latency grows linearly, +100 % over 20 minutes;
- cost step: every request costs 2x (a price or prompt change);
- spend spike: the organization spends 5x for 10 minutes.

Detection delay is simulated time from the incident's start to the end of the sample that opened
the anomaly (the earliest its data exists), and separately with the pipeline's worst-case lags
added (a sample waits up to 15 s for the next beat run). A slow drift has no sharp start: its delay is
given from the moment it reaches +30 % (just over the level rule's +25 % floor), and also from its
start. False positives: clean
series (6 h each) replayed with nothing injected; the rate is the share of judged samples (after the
warm-up) that opened an anomaly, and the share of time an alert stood open.
"""

from __future__ import annotations

import argparse
import functools
import math
import random
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps.ops.anomaly import (  # noqa: E402 - after the path is set
    DEPLOYMENT_COST,
    DEPLOYMENT_ERRORS,
    DEPLOYMENT_LATENCY,
    ORGANIZATION_SPEND,
    SERIES,
    error_rate_sample,
    series_new,
    series_step,
)

BUCKET_S = 15
SPEND_S = 30
BEAT_S = 15  # the beat task's period (ops-anomalies-detect)
HOUR = 3600
GOAL_S = 120

# The minimum successes for a latency or cost sample, as the beat task (apps.ops.tasks) uses.
MIN_SUCCESSES = 3


def poisson(rng: random.Random, lam: float) -> int:
    # Knuth's method (small lam) or a rounded normal (large).
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


@dataclass
class Bucket:
    attempts: int
    errors: int
    latency_ms: float | None  # mean of successes
    cost_usd: float | None


# An incident changes a bucket's parameters: (seconds since its start) -> (latency x, error rate, cost x)
Effect = Callable[[float], tuple[float, float, float]]


def deployment_bucket(rng: random.Random, *, rate: float, latency_x: float, error_rate: float, cost_x: float) -> Bucket:
    attempts = poisson(rng, rate)
    errors = sum(1 for _ in range(attempts) if rng.random() < error_rate)
    ok = attempts - errors
    if ok == 0:
        return Bucket(attempts, errors, None, None)
    latency = statistics.fmean(800.0 * latency_x * math.exp(rng.gauss(0, 0.5)) for _ in range(ok))
    cost = statistics.fmean(0.002 * cost_x * math.exp(rng.gauss(0, 0.6)) for _ in range(ok))
    return Bucket(attempts, errors, latency, cost)


def deployment_samples(bucket: Bucket) -> dict[str, float]:
    """The samples a bucket gives each series, as apps.ops.tasks derives them."""
    samples: dict[str, float] = {}
    if bucket.attempts:
        samples[DEPLOYMENT_ERRORS] = error_rate_sample(errors=bucket.errors, attempts=bucket.attempts)
    if bucket.latency_ms is not None and bucket.attempts - bucket.errors >= MIN_SUCCESSES:
        samples[DEPLOYMENT_LATENCY] = bucket.latency_ms
        assert bucket.cost_usd is not None
        samples[DEPLOYMENT_COST] = bucket.cost_usd
    return samples


@dataclass
class Replay:
    opened_at: dict[str, list[float]]  # series -> sample end times at which an anomaly opened
    judged: dict[str, int]  # series -> samples judged after the warm-up
    open_samples: dict[str, int]  # series -> samples after which an anomaly stood open


def replay_deployment(rng: random.Random, *, hours: float, rate: float, effect: Effect | None, start: float) -> Replay:
    states = {kind: series_new() for kind in (DEPLOYMENT_LATENCY, DEPLOYMENT_ERRORS, DEPLOYMENT_COST)}
    result = Replay({k: [] for k in states}, dict.fromkeys(states, 0), dict.fromkeys(states, 0))
    for index in range(int(hours * HOUR / BUCKET_S)):
        t0 = index * BUCKET_S
        latency_x, error_rate, cost_x = 1.0, 0.01, 1.0
        if effect is not None and t0 + BUCKET_S > start:
            # The bucket the incident starts in is affected for the part after the start.
            share = min(1.0, (t0 + BUCKET_S - start) / BUCKET_S)
            lx, er, cx = effect(max(0.0, t0 - start))
            latency_x, error_rate, cost_x = 1 + share * (lx - 1), 0.01 + share * (er - 0.01), 1 + share * (cx - 1)
        bucket = deployment_bucket(rng, rate=rate, latency_x=latency_x, error_rate=error_rate, cost_x=cost_x)
        for kind, x in deployment_samples(bucket).items():
            warm = states[kind]["n"] >= SERIES[kind].warmup
            states[kind], verdict = series_step(SERIES[kind], states[kind], x)
            if warm:
                result.judged[kind] += 1
                result.open_samples[kind] += verdict.is_open
            if verdict.opened:
                result.opened_at[kind].append(t0 + BUCKET_S)
    return result


def replay_spend(rng: random.Random, *, hours: float, factor: Callable[[float], float]) -> Replay:
    state = series_new()
    kind = ORGANIZATION_SPEND
    result = Replay({kind: []}, {kind: 0}, {kind: 0})
    phase = rng.uniform(0, 2 * math.pi)
    for index in range(int(hours * HOUR / SPEND_S)):
        t0 = index * SPEND_S
        swing = 1 + 0.3 * math.sin(phase + 2 * math.pi * t0 / (24 * HOUR))
        # Integrate the factor over the minute (a spike starting mid-minute counts for its part).
        x = sum(factor(t0 + s) for s in range(0, SPEND_S, 5)) / (SPEND_S / 5)
        spend = sum(0.01 * math.exp(rng.gauss(0, 0.8)) for _ in range(poisson(rng, 30 * SPEND_S / 60 * swing * x)))
        spend *= 60 / SPEND_S  # USD per minute, as the beat task samples it
        warm = state["n"] >= SERIES[kind].warmup
        state, verdict = series_step(SERIES[kind], state, spend)
        if warm:
            result.judged[kind] += 1
            result.open_samples[kind] += verdict.is_open
        if verdict.opened:
            result.opened_at[kind].append(t0 + SPEND_S)
    return result


def pipeline_lag(kind: str, sample_end: float) -> float:
    """How long after its end the beat task may judge a sample, at worst: a run starts up to one
    period after the data ends (deployment buckets are judged as each ends, spend per whole pair)."""
    return float(BEAT_S)


@dataclass(frozen=True)
class Incident:
    name: str
    kind: str
    effect: Effect | None = None  # deployments
    spend: Callable[[float], float] | None = None  # organizations: spend factor at seconds since start
    floor_after: Callable[[], float] = lambda: 0.0  # seconds from the start until it reaches the floor


INCIDENTS = [
    Incident("latency step (2x)", DEPLOYMENT_LATENCY, effect=lambda s: (2.0, 0.01, 1.0)),
    Incident("error burst (30 % for 5 min)", DEPLOYMENT_ERRORS, effect=lambda s: (1.0, 0.3 if s < 300 else 0.01, 1.0)),
    Incident(
        "slow drift (latency +100 % over 20 min)",
        DEPLOYMENT_LATENCY,
        effect=lambda s: (1.0 + min(1.0, s / 1200), 0.01, 1.0),
        floor_after=lambda: 0.3 * 1200,
    ),
    Incident("cost step (2x per request)", DEPLOYMENT_COST, effect=lambda s: (1.0, 0.01, 2.0)),
    Incident("spend spike (5x for 10 min)", ORGANIZATION_SPEND, spend=lambda s: 5.0 if 0 <= s < 600 else 1.0),
]


def _shifted(effect: Callable[[float], float], start: float, t: float) -> float:
    return effect(t - start)


def run_incidents(trials: int, seed: int) -> list[str]:
    lines = []
    for number, incident in enumerate(INCIDENTS):
        delays: list[float] = []
        lagged: list[float] = []
        missed = false_before = 0
        for trial in range(trials):
            rng = random.Random(seed * 1_000_003 + number * 10_007 + trial)
            start = HOUR + rng.uniform(0, 1800)
            if incident.spend is not None:
                result = replay_spend(rng, hours=2.5, factor=functools.partial(_shifted, incident.spend, start))
            else:
                rate = 20.0
                result = replay_deployment(rng, hours=2.5, rate=rate, effect=incident.effect, start=start)
            opens = result.opened_at[incident.kind]
            false_before += sum(1 for t in opens if t <= start)
            after = [t for t in opens if t > start]
            if not after:
                missed += 1
                continue
            delays.append(after[0] - start - incident.floor_after())
            lagged.append(delays[-1] + pipeline_lag(incident.kind, after[0]))
        found = trials - missed
        worst = max(delays) if delays else float("nan")
        worst_lagged = max(lagged) if lagged else float("nan")
        ok = missed == 0 and worst_lagged <= GOAL_S
        reference = " after reaching +30 %" if incident.floor_after() else ""
        lines.append(
            f"{incident.name:42} found {found}/{trials}  delay{reference}: median {statistics.median(delays):5.0f} s, "
            f"p95 {sorted(delays)[int(0.95 * (len(delays) - 1))]:5.0f} s, max {worst:5.0f} s; "
            f"with pipeline lag max {worst_lagged:5.0f} s  {'OK' if ok else 'GOAL MISSED'}"
            + (f"  (false opens before the incident: {false_before})" if false_before else "")
        )
        if incident.floor_after():
            from_start = [d + incident.floor_after() for d in delays]
            lines.append(f"{'':42} (from the drift's start: median {statistics.median(from_start):5.0f} s)")
    return lines


def run_clean(series: int, seed: int, hours: float) -> list[str]:
    judged: dict[str, int] = {}
    opened: dict[str, int] = {}
    open_samples: dict[str, int] = {}
    for index in range(series):
        rng = random.Random(seed * 7_919 + index)
        runs = [
            replay_deployment(rng, hours=hours, rate=20.0, effect=None, start=math.inf),
            replay_deployment(rng, hours=hours, rate=3.0, effect=None, start=math.inf),  # a quiet deployment
            replay_spend(rng, hours=hours, factor=lambda t: 1.0),
        ]
        for result in runs:
            for kind, count in result.judged.items():
                judged[kind] = judged.get(kind, 0) + count
                opened[kind] = opened.get(kind, 0) + len(result.opened_at[kind])
                open_samples[kind] = open_samples.get(kind, 0) + result.open_samples[kind]
    lines = []
    total_judged = sum(judged.values())
    for kind, count in judged.items():
        lines.append(
            f"{kind:20} samples {count:7}  false opens {opened[kind]:4} "
            f"({100 * opened[kind] / max(1, count):.3f} % of samples, "
            f"{opened[kind] / (series * hours * (2 if kind != ORGANIZATION_SPEND else 1)):.3f} per series-hour), "
            f"alert open {100 * open_samples[kind] / max(1, count):.3f} % of the time"
        )
    rate = 100 * sum(opened.values()) / max(1, total_judged)
    time_open = 100 * sum(open_samples.values()) / max(1, total_judged)
    lines.append(
        f"{'all clean series':20} samples {total_judged:7}  false-positive rate {rate:.3f} % of samples, "
        f"alert open {time_open:.3f} % of the time  {'OK' if rate < 1 and time_open < 1 else 'GOAL MISSED'}"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="replays per incident type")
    parser.add_argument("--clean", type=int, default=100, help="clean replays of each series type")
    parser.add_argument("--hours", type=float, default=6.0, help="length of each clean replay")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(f"Injected incidents ({args.trials} replays each; goal: all found within {GOAL_S} s)")
    for line in run_incidents(args.trials, args.seed):
        print("  " + line)
    print(
        f"Clean series ({args.clean} x {args.hours:g} h each of a busy deployment, a quiet one and an "
        "organization's spend; goal: under 1 %)"
    )
    for line in run_clean(args.clean, args.seed, args.hours):
        print("  " + line)


if __name__ == "__main__":
    main()
