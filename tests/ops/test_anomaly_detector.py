"""The anomaly detector on synthetic series (pure functions: no database, no Redis)."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any

import pytest

from apps.ops.anomaly import (
    DEPLOYMENT_ERRORS,
    DEPLOYMENT_LATENCY,
    ORGANIZATION_SPEND,
    SERIES,
    Detector,
    Verdict,
    error_rate_sample,
    series_new,
    series_step,
)

LATENCY = SERIES[DEPLOYMENT_LATENCY]


def _run(detector: Detector, values: list[float], state: dict[str, Any] | None = None) -> list[Verdict]:
    state = state or series_new()
    verdicts = []
    for value in values:
        state, verdict = series_step(detector, state, value)
        verdicts.append(verdict)
    return verdicts


def _noisy(n: int, *, level: float = 800.0, spread: float = 0.1, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [level * math.exp(rng.gauss(0, spread)) for _ in range(n)]


def _first_open(verdicts: list[Verdict]) -> int | None:
    return next((index for index, verdict in enumerate(verdicts) if verdict.opened), None)


def test_a_noisy_but_normal_series_opens_nothing() -> None:
    verdicts = _run(LATENCY, _noisy(2000, spread=0.12))
    assert not any(verdict.opened for verdict in verdicts)
    assert 700 < verdicts[-1].baseline < 900


def test_nothing_opens_during_the_warm_up_however_wild_the_samples() -> None:
    values = _noisy(LATENCY.warmup - 5) + [80_000.0] * 5
    assert not any(verdict.opened or verdict.anomalous for verdict in _run(LATENCY, values))


def test_a_latency_step_opens_within_two_samples_and_resolves_when_it_ends() -> None:
    normal = _noisy(200)
    verdicts = _run(LATENCY, normal + _noisy(20, level=1600, seed=2) + _noisy(40, seed=3))
    opened = _first_open(verdicts)
    assert opened is not None and 200 <= opened <= 201
    assert verdicts[opened].value > verdicts[opened].threshold or verdicts[opened].anomalous
    assert 750 < verdicts[opened].baseline < 850  # the incident did not become the baseline
    resolved = next(index for index, verdict in enumerate(verdicts) if verdict.resolved)
    assert 220 < resolved <= 230  # hysteresis: some normal samples in a row first
    assert not verdicts[-1].is_open


def test_an_error_burst_opens_and_a_single_failed_attempt_does_not() -> None:
    detector = SERIES[DEPLOYMENT_ERRORS]
    clean = [error_rate_sample(errors=0, attempts=20)] * 100
    lone_failures = [error_rate_sample(errors=1, attempts=2), error_rate_sample(errors=0, attempts=20)] * 5
    burst = [error_rate_sample(errors=8, attempts=20)] * 4
    verdicts = _run(detector, clean + lone_failures + burst)
    assert _first_open(verdicts) in (110, 111)


def test_a_slow_drift_opens_though_each_step_is_small() -> None:
    # +1 % per sample (15 s): +100 % after 25 minutes, far smaller than the noise per step.
    drift = [value * (1 + 0.01 * index) for index, value in enumerate(_noisy(100, seed=4))]
    verdicts = _run(LATENCY, _noisy(200) + drift)
    opened = _first_open(verdicts)
    assert opened is not None
    assert opened - 200 <= 40  # by the time it is ~+40 %, well within its detector's floor + noise


def test_a_slow_drift_under_the_level_rules_floor_opens_on_the_lasting_shift_rule() -> None:
    # +0.5 % per sample: the smoothed level never gets over the level rule's +25 % floor in 45
    # samples (it ends near +22 %), but the excess over the lasting-shift reference adds up.
    normal = _noisy(300, spread=0.1)
    drift = [value * (1 + 0.005 * index) for index, value in enumerate(_noisy(45, spread=0.1, seed=8))]
    verdicts = _run(LATENCY, normal + drift)
    opened = _first_open(verdicts)
    assert opened is not None and opened >= 300
    verdict = verdicts[opened]
    assert verdict.rule == "lasting"
    assert verdict.samples >= 3 and verdict.line < verdict.seen < verdict.threshold
    assert 750 < verdict.baseline < 850  # against the level from before the drift


def test_without_the_lasting_shift_rule_the_same_drift_opens_later_or_not_at_all() -> None:
    normal = _noisy(300, spread=0.1)
    drift = [value * (1 + 0.005 * index) for index, value in enumerate(_noisy(45, spread=0.1, seed=8))]
    with_rule = _first_open(_run(LATENCY, normal + drift))
    without = _first_open(_run(replace(LATENCY, cusum_h=0.0), normal + drift))
    assert with_rule is not None and (without is None or without > with_rule)


def test_no_single_sample_opens_the_lasting_shift_rule_however_wild() -> None:
    for detector in SERIES.values():
        assert detector.cusum_h == 0 or detector.cusum_cap < detector.cusum_h
    verdicts = _run(LATENCY, [*_noisy(300), 1e9, *_noisy(3, seed=9)])
    assert not any(verdict.opened for verdict in verdicts)


def test_the_lasting_shift_total_is_kept_in_the_state_and_starts_over_on_opening() -> None:
    state = series_new()
    for value in _noisy(300):
        state, _ = series_step(LATENCY, state, value)
    assert 0.0 <= state["cusum"] < LATENCY.cusum_h
    for value in _noisy(20, level=1400, seed=10):
        state, verdict = series_step(LATENCY, state, value)
        if verdict.opened:
            break
    assert verdict.opened and state["cusum"] == 0.0 and state["run"] == 0
    assert len(state["normal"]) <= LATENCY.window  # bounded, whatever the series' length


def test_a_single_spike_opens_nothing_and_does_not_move_the_baseline() -> None:
    verdicts = _run(LATENCY, [*_noisy(200), 20_000.0, *_noisy(50, seed=5)])
    assert not any(verdict.opened for verdict in verdicts)
    assert 750 < verdicts[-1].baseline < 850


def test_a_spend_spike_opens_and_a_heavy_tailed_normal_spend_does_not() -> None:
    detector = SERIES[ORGANIZATION_SPEND]
    rng = random.Random(6)

    def minute(factor: float) -> float:
        count = round(15 * factor + rng.gauss(0, math.sqrt(15 * factor)))
        return sum(0.01 * math.exp(rng.gauss(0, 0.8)) for _ in range(max(0, count))) * 2

    normal = [minute(1.0) for _ in range(600)]
    assert not any(verdict.opened for verdict in _run(detector, normal))
    verdicts = _run(detector, normal + [minute(5.0) for _ in range(10)])
    opened = _first_open(verdicts)
    assert opened is not None and 600 <= opened <= 602  # within three 30 s samples
    # One sample of a large request (ten times the normal spend) opens nothing.
    assert not any(verdict.opened for verdict in _run(detector, [*normal, 10 * normal[-1], *normal[:5]]))


def test_a_lasting_shift_becomes_the_new_normal_after_relearn_after_samples() -> None:
    detector = replace(LATENCY, relearn_after=20)
    verdicts = _run(detector, _noisy(200) + _noisy(60, level=2400, seed=7))
    relearned = [index for index, verdict in enumerate(verdicts) if verdict.relearned]
    assert relearned and relearned[0] < 225
    assert not verdicts[-1].is_open and verdicts[-1].baseline > 2000


def test_state_round_trips_through_json_and_rejects_non_finite_samples() -> None:
    import json

    state = series_new()
    for value in _noisy(50):
        state, _ = series_step(LATENCY, json.loads(json.dumps(state)), value)
    assert state["n"] == 50
    with pytest.raises(ValueError, match="finite"):
        series_step(LATENCY, state, float("nan"))


def test_the_error_rate_sample_is_a_lower_bound_that_grows_with_evidence() -> None:
    assert error_rate_sample(errors=0, attempts=50) == 0.0
    one_of_three = error_rate_sample(errors=1, attempts=3)
    thirty_of_hundred = error_rate_sample(errors=30, attempts=100)
    assert one_of_three < 0.1 < thirty_of_hundred < 0.3
    assert error_rate_sample(errors=10, attempts=10) > 0.7
