"""Anomaly detection: a robust EWMA baseline with a median-absolute-deviation scale, per series.

Pure functions over plain state (a dict that round-trips through JSON), so the beat task keeps no
memory between runs (it stores each series' state in Redis) and the bench (bench/anomaly.py)
replays synthetic series through exactly this code.

How one sample `x` of a series is judged (all series are one-sided: only *high* values are
anomalies: latency, error rate, cost per request, spend):

- baseline: an exponentially weighted moving average of the series' normal samples, each clipped
  to `baseline + clip * scale` before it is taken in, so one outlier moves it little ("robust EWMA");
- scale: 1.4826 x the median absolute difference of consecutive normal samples among the last
  `window`, / sqrt 2 (the standard deviation of normal noise, unmoved by outliers and by a slow
  trend), never below `min_scale` x the baseline;
- threshold: `baseline + max(k * scale, relative * baseline, absolute)`; the relative and absolute
  floors keep a near-constant series (MAD 0) from alerting on a trivial change;
- warm-up: the first `warmup` samples only teach the baseline; nothing opens before;
- opening, on any of three rules:
  - spike: `open_after` samples in a row over the threshold;
  - level: a fast EWMA of the samples (each capped) over the lower
    `baseline + max(k_level * scale * smoothing, relative * baseline, absolute)` for `level_after`
    samples in a row (a moderate step that stays);
  - lasting shift (one-sided CUSUM, Page's test): each sample's excess over the reference
    `baseline + max(cusum_k * scale, cusum_share * relative * baseline, cusum_share * absolute)`,
    in scales and at most `cusum_cap` per sample, is added up (never below 0); the total over
    `cusum_h` opens. A slow drift is found once its accumulated excess is clear, before its level
    reaches the level rule's line (whose EWMA trails a trend and whose line is above the noise);
    as `cusum_cap` < `cusum_h`, no single sample opens it, however wild;
  samples that look like an incident's start are kept out of the baseline;
- closing (hysteresis): `close_after` samples in a row at or under
  `baseline + max(k_close * scale, relative/2 * baseline, absolute/2)`; the baseline is frozen
  while open, so the incident never becomes the new normal;
- a shift that stays open `relearn_after` samples is taken as the new normal: the anomaly resolves
  and the baseline restarts from the recent samples.

A series' state is bounded: `window` + 8 numbers and a few counters, whatever its length.

The thresholds per kind of series are in SERIES (documented in docs/operations.md, "Anomaly
detection and self-healing").
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEPLOYMENT_COST",
    "DEPLOYMENT_ERRORS",
    "DEPLOYMENT_LATENCY",
    "KINDS",
    "ORGANIZATION_SPEND",
    "SERIES",
    "Detector",
    "Verdict",
    "error_rate_sample",
    "series_new",
    "series_step",
]

DEPLOYMENT_LATENCY = "deployment_latency"
DEPLOYMENT_ERRORS = "deployment_errors"
DEPLOYMENT_COST = "deployment_cost"
ORGANIZATION_SPEND = "organization_spend"
KINDS = (DEPLOYMENT_LATENCY, DEPLOYMENT_ERRORS, DEPLOYMENT_COST, ORGANIZATION_SPEND)

_MAD_TO_SIGMA = 1.4826  # MAD x this = standard deviation, for normal noise


@dataclass(frozen=True)
class Detector:
    """The thresholds of one kind of series (see the module's docstring for each one's role)."""

    alpha: float  # weight of a new normal sample in the baseline (slow: drifts stand out)
    alpha_fast: float  # weight of every sample in the smoothed level (fast: follows incidents)
    k: float  # spike rule: scales over the baseline
    k_level: float  # level rule: scales (of the smoothed level) over the baseline
    k_close: float  # closing: scales (of the smoothed level) over the baseline
    relative: float  # every line is at least baseline x (1 + relative) ...
    absolute: float  # ... and at least baseline + absolute (the series' unit)
    warmup: int  # samples before anything may open
    open_after: int  # spike rule: samples in a row
    level_after: int  # level rule: samples in a row
    close_after: int  # closing: samples in a row
    window: int = 40  # normal samples kept for the MAD
    clip: float = 3.0  # a sample enters the baseline at most this many scales from it
    min_scale: float = 0.02  # the scale is at least this fraction of the baseline
    relearn_after: int = 240  # samples open before a lasting shift becomes the new normal
    # > 0: the series is judged as log(1 + x / log_floor) (heavy-tailed, multiplicative series such
    # as spend); `absolute` is then in those units (log 2.5: 2.5 times the baseline) and values
    # under log_floor count as about nothing. Verdicts report values in the series' own unit.
    log_floor: float = 0.0
    unit: str = ""
    # Lasting-shift rule (CUSUM): the excess over baseline + max(cusum_k * scale, cusum_share x the
    # floors), in scales and at most cusum_cap per sample, adds up; a total over cusum_h opens.
    # cusum_h 0: no such rule.
    cusum_k: float = 0.75
    cusum_share: float = 0.5
    cusum_h: float = 0.0
    cusum_cap: float = 2.0

    @property
    def smoothing(self) -> float:
        """How much the smoothed level's noise is below a sample's (EWMA of independent samples)."""
        return math.sqrt(self.alpha_fast / (2 - self.alpha_fast))


# Sample periods: a deployment's series gets one sample per 15 s bucket with traffic (4 per
# minute), an organization's spend one per 30 s. See docs/operations.md for the reasoning.
SERIES: dict[str, Detector] = {
    # Mean latency of the bucket's successful calls, ms (buckets with 3 successes or more).
    # Lasting shift: over baseline + max(0.75 scale, 12.5 %), 6 scales in all (bench: a drift of
    # +5 %/min is found by +30 %, at worst 1.5 min after).
    DEPLOYMENT_LATENCY: Detector(
        alpha=0.005, alpha_fast=0.4, k=5.0, k_level=3.5, k_close=2.0, relative=0.25, absolute=50.0,
        warmup=40, open_after=2, level_after=2, close_after=4, window=120,
        cusum_k=0.75, cusum_share=0.5, cusum_h=6.0, cusum_cap=2.0, unit="ms",
    ),
    # Provider-side error rate of the bucket's attempts, as its Wilson lower bound (error_rate_sample):
    # a few attempts with one failure never look like an outage. No lasting-shift rule: mostly zeros
    # (MAD 0), and an outage is a burst, which the other two rules find within a minute.
    DEPLOYMENT_ERRORS: Detector(
        alpha=0.01, alpha_fast=0.3, k=6.0, k_level=6.0, k_close=3.0, relative=1.0, absolute=0.06,
        warmup=20, open_after=2, level_after=1, close_after=4, min_scale=0.05, unit="error rate",
    ),
    # Mean cost of the bucket's successful calls, USD (buckets with 3 successes or more).
    DEPLOYMENT_COST: Detector(
        alpha=0.005, alpha_fast=0.3, k=6.0, k_level=3.5, k_close=2.0, relative=0.3, absolute=0.00001,
        warmup=40, open_after=2, level_after=2, close_after=4, window=120,
        cusum_k=0.75, cusum_share=0.5, cusum_h=6.0, cusum_cap=2.0, unit="USD/request",
    ),
    # The organization's spend rate over the sample's 30 s, USD per minute, judged on a log scale
    # (spend is heavy-tailed: one large request is not an incident; a rate 2.5x or more is).
    # Lasting shift: over baseline + max(1 scale, x 1.58), 3.5 scales in all, at most 3 per sample
    # (two high samples: a 5x spike is found within 3 samples, one large request alone opens nothing).
    ORGANIZATION_SPEND: Detector(
        alpha=0.01, alpha_fast=0.5, k=5.0, k_level=3.0, k_close=2.0, relative=0.0, absolute=math.log(2.5),
        warmup=60, open_after=2, level_after=2, close_after=6, min_scale=0.0, relearn_after=240,
        cusum_k=1.0, cusum_share=0.5, cusum_h=3.5, cusum_cap=3.0, log_floor=0.05, unit="USD/min",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """What one sample did to its series."""

    value: float
    baseline: float
    threshold: float  # the spike rule's line for this sample
    anomalous: bool  # over a rule's line, after the warm-up
    opened: bool  # this sample opened an anomaly
    resolved: bool  # this sample closed one
    relearned: bool  # closed because a lasting shift became the new normal
    is_open: bool  # open after this sample
    # What opened it (only when `opened`): "spike", "level" or "lasting"; the line that rule's
    # figure crossed; that figure (spike: the sample, level: the smoothed level, lasting: the mean
    # of the samples whose excess added up); and how many samples that figure covers.
    rule: str = ""
    line: float = 0.0
    seen: float = 0.0
    samples: int = 0


def series_new() -> dict[str, Any]:
    """The state of a series that has seen nothing."""
    return {
        "n": 0, "baseline": 0.0, "fast": 0.0, "normal": [], "tail": [],
        "hits": 0, "level": 0, "calm": 0, "open": False, "age": 0, "cusum": 0.0, "run": 0, "run_sum": 0.0,
    }  # fmt: skip


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _scale(detector: Detector, state: dict[str, Any]) -> float:
    # The median absolute difference of consecutive normal samples, / sqrt 2: the noise of one
    # sample, untouched by outliers and by a slow trend inside the window (a drift under way would
    # widen a plain MAD around the median, and hide itself).
    normal: list[float] = state["normal"]
    mad = 0.0
    if len(normal) >= 4:
        mad = _median([abs(b - a) for a, b in itertools.pairwise(normal)]) / math.sqrt(2)
    return max(_MAD_TO_SIGMA * mad, detector.min_scale * abs(float(state["baseline"])), 1e-12)


def _line(detector: Detector, baseline: float, spread: float, share: float = 1.0) -> float:
    return baseline + max(spread, share * detector.relative * abs(baseline), share * detector.absolute)


def _learn(detector: Detector, state: dict[str, Any], x: float, scale: float) -> None:
    if state["n"] == 0:
        state["baseline"] = x
    else:
        if len(state["normal"]) >= 3:
            # Clipped on both sides: a single dip pulls the baseline no more than a spike pushes it.
            x = min(max(x, state["baseline"] - detector.clip * scale), state["baseline"] + detector.clip * scale)
        alpha = max(detector.alpha, 1.0 / (state["n"] + 1))  # a plain mean while warming up
        state["baseline"] += alpha * (x - state["baseline"])
    state["normal"] = [*state["normal"], x][-detector.window :]


def _accumulate(detector: Detector, state: dict[str, Any], x: float, reference: float, scale: float) -> bool:
    """The lasting-shift rule (one-sided CUSUM): add the sample's excess over `reference`, in scales
    and at most `cusum_cap`; the total never goes below 0. Keeps the run of samples since it was
    last 0 (their count and sum: what the explanation reports). True once the total is over `cusum_h`."""
    total = max(0.0, float(state.get("cusum", 0.0)) + min((x - reference) / scale, detector.cusum_cap))
    if total > 0:
        state.update(cusum=total, run=int(state.get("run", 0)) + 1, run_sum=float(state.get("run_sum", 0.0)) + x)
    else:
        state.update(cusum=0.0, run=0, run_sum=0.0)
    return total > detector.cusum_h


def _outward(detector: Detector, value: float) -> float:
    return math.expm1(value) * detector.log_floor if detector.log_floor else value


def series_step(detector: Detector, state: dict[str, Any], sample: float) -> tuple[dict[str, Any], Verdict]:
    """Judge one sample; returns the series' new state (a new dict) and the verdict."""
    if not math.isfinite(sample):
        raise ValueError("a sample must be a finite number")
    x = math.log1p(max(sample, 0.0) / detector.log_floor) if detector.log_floor else sample
    state = {**state, "normal": list(state["normal"]), "tail": [*state["tail"], x][-8:]}
    baseline = float(state["baseline"])
    scale = _scale(detector, state)
    threshold = _line(detector, baseline, detector.k * scale)
    level_line = _line(detector, baseline, detector.k_level * scale * detector.smoothing)
    # The smoothed level takes a sample at most `clip` scales (or twice the level rule's margin) over
    # the baseline: one wild sample moves it no more than a moderately high one would.
    cap = baseline + max(detector.clip * scale, 2 * (level_line - baseline))
    bounded = min(x, cap) if state["n"] >= detector.warmup else x
    fast = x if state["n"] == 0 else state["fast"] + detector.alpha_fast * (bounded - state["fast"])
    state["fast"] = fast
    warm = state["n"] >= detector.warmup
    spike, level = warm and x > threshold, warm and fast > level_line
    reference = _line(detector, baseline, detector.cusum_k * scale, share=detector.cusum_share)
    accumulating = bool(detector.cusum_h) and warm and not state["open"]
    lasting = accumulating and _accumulate(detector, state, x, reference, scale)
    opened = resolved = relearned = False
    rule, line, seen, samples = "", 0.0, 0.0, 0
    if not state["open"]:
        state["hits"] = state["hits"] + 1 if spike else 0
        state["level"] = state["level"] + 1 if level else 0
        opening = (
            ("spike", threshold, x, state["hits"])
            if state["hits"] >= detector.open_after
            else ("level", level_line, fast, state["level"])
            if state["level"] >= detector.level_after
            else ("lasting", reference, state["run_sum"] / state["run"], state["run"])
            if lasting
            else None
        )
        if opening:
            rule, line, seen, samples = opening
            state.update(open=True, calm=0, age=0, cusum=0.0, run=0, run_sum=0.0)
            opened = True
        elif not (spike or level or (warm and x > _line(detector, baseline, detector.clip * scale))):
            _learn(detector, state, x, scale)  # what looks like the start of an incident is not learned
        state["n"] += 1
    else:
        state["age"] += 1
        close_line = _line(detector, baseline, detector.k_close * scale * detector.smoothing, share=0.5)
        state["calm"] = state["calm"] + 1 if fast <= close_line else 0
        if state["calm"] >= detector.close_after:
            resolved = True
        elif state["age"] >= detector.relearn_after:
            # A lasting shift: the recent samples are the new normal.
            resolved = relearned = True
            state.update(baseline=_median(state["tail"]), normal=list(state["tail"]))
        if resolved:
            state.update(open=False, hits=0, level=0, calm=0, age=0)
    return state, Verdict(
        value=sample,
        baseline=_outward(detector, baseline),
        threshold=_outward(detector, threshold),
        anomalous=spike or level or lasting,
        opened=opened,
        resolved=resolved,
        relearned=relearned,
        is_open=bool(state["open"]),
        rule=rule,
        line=_outward(detector, line) if rule else 0.0,
        seen=_outward(detector, seen) if rule else 0.0,
        samples=samples,
    )


def error_rate_sample(*, errors: int, attempts: int, z: float = 2.0) -> float:
    """The Wilson score interval's lower bound of an error rate: what a bucket's errors say the rate
    is at least (one failure in three attempts is weak evidence, thirty in a hundred strong)."""
    if attempts <= 0:
        raise ValueError("no attempts")
    errors = min(max(errors, 0), attempts)
    p = errors / attempts
    denominator = 1 + z * z / attempts
    centre = p + z * z / (2 * attempts)
    margin = z * math.sqrt(p * (1 - p) / attempts + z * z / (4 * attempts * attempts))
    return max(0.0, (centre - margin) / denominator)
