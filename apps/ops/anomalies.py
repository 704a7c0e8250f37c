"""Anomaly detection and self-healing: the beat task's work (apps.ops.anomaly_tasks), every 15 s.

1. Read the traffic buckets written since the last run (apps.llm.traffic: per 15 s, each platform
   deployment's attempts, provider-side failures, latency and cost, each organization's spend), in
   one Redis round trip; nothing is read from any tenant schema.
2. Turn them into samples: per deployment and bucket its error rate (Wilson lower bound), mean
   latency and mean cost per request (3 successes or more); per organization and 30 s its spend rate.
3. Judge each sample with its series' detector (apps.ops.anomaly, state kept in Redis between runs).
4. Act: an anomaly opens a public `Anomaly` row with its explanation; a deployment's error anomaly
   also opens its breaker (routing falls back; after the cooldown one probe call decides, as after
   provider failures) and asks the work reaper to run now for the organizations that used it, so
   their stuck work is requeued at once. Spend anomalies are flagged only (budgets are the limit).
   An anomaly resolves itself when its series is back to normal (hysteresis, apps.ops.anomaly).
5. `cognitionos_anomalies_open{kind}` is read from the open rows at scrape time (anomaly_metrics).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.accounts.principals import Principal
from apps.llm.calls import TRAFFIC_BUCKET_S, TrafficBucket, traffic_bucket, traffic_buckets, traffic_key
from apps.llm.platform.models import CatalogModel, UsageBucket, UsageSpan
from apps.ops.anomaly import (
    DEPLOYMENT_COST,
    DEPLOYMENT_ERRORS,
    DEPLOYMENT_LATENCY,
    ORGANIZATION_SPEND,
    SERIES,
    Verdict,
    error_rate_sample,
    series_new,
    series_step,
)
from apps.ops.models import Anomaly
from apps.tenants.models import Organization
from cognitionos.redis import redis_client

logger = logging.getLogger(__name__)

STATE_KEY = "ops:anomaly:state"  # hash "<kind>|<subject key>" -> the series' state (JSON)
CURSOR_KEY = "ops:anomaly:cursor"  # the last traffic bucket judged for deployments
SPEND_CURSOR_KEY = "ops:anomaly:cursor:spend"  # ... and for spend (the end of a pair)
LOCK_KEY = "ops:anomaly:lock"
LOCK_S = 120
MIN_SUCCESSES = 3  # a bucket's latency and cost are judged from this many successful calls
SPEND_BUCKETS = 2  # an organization's spend is judged per 2 buckets (30 s)
IDLE_FORGET_S = 3600  # an organization's spend series with no spend for this long is forgotten
MAX_ORGANIZATION_SERIES = 5000  # bound on the spend series kept (the busiest stay)
MAX_REAPS = 200  # organizations whose reaper one error anomaly runs at once
ACTOR = Principal.system("anomaly detection")


@dataclass(frozen=True)
class Sample:
    kind: str
    key: str  # the series' key: a model name, or an organization id
    value: float
    end: float  # Unix time the sample's data ends
    detail: str  # what the value is made of, for the explanation


@dataclass
class DetectReport:
    buckets: int = 0
    samples: int = 0
    opened: list[str] = field(default_factory=list)  # "<kind> <subject>"
    resolved: list[str] = field(default_factory=list)


def _last_complete(now: float) -> int:
    """The last bucket that ended before `now`, at the end of a spend pair (an odd number)."""
    current = traffic_bucket(now)
    return SPEND_BUCKETS * ((current - SPEND_BUCKETS) // SPEND_BUCKETS) + SPEND_BUCKETS - 1


def samples_from(
    buckets: list[TrafficBucket],
    *,
    idle: Iterable[int] = (),
    deployments_from: int | None = None,
    spend_from: int | None = None,
    spend_until: int | None = None,
) -> list[Sample]:
    """The samples of complete buckets, in order: the deployments' from each bucket (from
    `deployments_from`), the spend per aligned pair of buckets (whole pairs from `spend_from` up to
    `spend_until`). Organizations with a series but no spend in a pair (`idle`) get a zero sample,
    so a quiet organization's sudden spend stands out."""
    samples: list[Sample] = []
    pair: list[TrafficBucket] = []
    idle = set(idle)
    for bucket in buckets:
        if deployments_from is None or bucket.number >= deployments_from:
            samples.extend(_deployment_samples(bucket))
        if (spend_from is not None and bucket.number < spend_from) or (
            spend_until is not None and bucket.number > spend_until
        ):
            continue
        pair.append(bucket)
        if (bucket.number + 1) % SPEND_BUCKETS == 0:
            if len(pair) == SPEND_BUCKETS:
                samples.extend(_spend_samples(pair, idle))
            pair = []
    return samples


def _deployment_samples(bucket: TrafficBucket) -> list[Sample]:
    samples: list[Sample] = []
    for name, traffic in sorted(bucket.deployments.items()):
        if traffic.attempts > 0:
            samples.append(
                Sample(
                    DEPLOYMENT_ERRORS,
                    name,
                    error_rate_sample(errors=traffic.errors, attempts=traffic.attempts),
                    bucket.end,
                    f"{traffic.errors} of {traffic.attempts} attempts failed provider-side in {TRAFFIC_BUCKET_S} s",
                )
            )
        if traffic.successes >= MIN_SUCCESSES:
            samples.append(
                Sample(
                    DEPLOYMENT_LATENCY,
                    name,
                    traffic.latency_ms_sum / traffic.successes,
                    bucket.end,
                    f"mean of {traffic.successes} successful calls in {TRAFFIC_BUCKET_S} s",
                )
            )
        if traffic.costed >= MIN_SUCCESSES:
            samples.append(
                Sample(
                    DEPLOYMENT_COST,
                    name,
                    traffic.cost_usd_sum / traffic.costed,
                    bucket.end,
                    f"mean of {traffic.costed} successful calls in {TRAFFIC_BUCKET_S} s",
                )
            )
    return samples


def _spend_samples(pair: list[TrafficBucket], idle: set[int]) -> list[Sample]:
    spend: dict[int, float] = defaultdict(float)
    for part in pair:
        for organization_id, usd in part.spend_usd.items():
            spend[organization_id] += usd
    seconds = SPEND_BUCKETS * TRAFFIC_BUCKET_S
    return [
        Sample(
            ORGANIZATION_SPEND,
            str(organization_id),
            spend.get(organization_id, 0.0) * 60 / seconds,
            pair[-1].end,
            f"${spend.get(organization_id, 0.0):.4f} spent in {seconds} s",
        )
        for organization_id in sorted(set(spend) | idle)
    ]


def _series_id(kind: str, key: str) -> str:
    return f"{kind}|{key}"


def _explain(kind: str, subject: str, verdict: Verdict, sample: Sample) -> str:
    unit = SERIES[kind].unit
    what = {
        DEPLOYMENT_LATENCY: f"Latency of {subject}",
        DEPLOYMENT_ERRORS: f"Provider-side error rate of {subject} (its lower confidence bound)",
        DEPLOYMENT_COST: f"Cost per request of {subject}",
        ORGANIZATION_SPEND: f"Spend rate of organization {subject}",
    }[kind]
    detector = SERIES[kind]
    why = {
        "spike": f"{verdict.samples} samples in a row were over {verdict.line:.6g} {unit}, the line for a sudden rise",
        "level": f"its smoothed level reached {verdict.seen:.6g} {unit}, over {verdict.line:.6g} {unit}, "
        f"the line for a rise that stays ({verdict.samples} samples in a row)",
        "lasting": f"its last {verdict.samples} samples, {verdict.seen:.6g} {unit} on average, were over "
        f"{verdict.line:.6g} {unit} by more than {detector.cusum_h:g} noise scales in all, the limit for a lasting "
        "shift (a slow drift, or a moderate rise that stays)",
    }.get(verdict.rule, f"the detector calls anything over {verdict.threshold:.6g} {unit} anomalous")
    return (
        f"{what} was {verdict.value:.6g} {unit} ({sample.detail}), against a normal level of "
        f"{verdict.baseline:.6g} {unit}; {why} (robust EWMA baseline with a MAD scale, see "
        f"docs/operations.md). Opened at {dt.datetime.fromtimestamp(sample.end, dt.UTC):%H:%M:%S} UTC; "
        "it resolves itself once the series stays back near its normal level."
    )


def _act_on_errors(*, provider: str, model: str, anomaly: Anomaly) -> str:
    """Open the deployment's breaker and run the reaper now where its calls were failing."""
    from apps.ops.services import operator_breaker_open

    actions = []
    try:
        operator_breaker_open(
            provider=provider,
            model=model,
            actor=ACTOR,
            reason=f"anomaly {anomaly.pk}: provider-side error rate {anomaly.observed:.2f} "
            f"(normal {anomaly.baseline:.2f})",
        )
    except Exception:  # the anomaly is recorded whatever happens to its action
        logger.exception("anomaly: opening the breaker of %s/%s failed", provider, model)
        actions.append("Opening the breaker FAILED (see the logs).")
    else:
        actions.append(
            f"Opened the breaker of {provider}/{model}: calls skip it (falling back to the next model of "
            f"their chain or policy) for {settings.LLM_BREAKER_COOLDOWN_S} s, then one probe call decides "
            "(a success closes it, a failure opens it again)."
        )
    since = timezone.now().replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
    organizations = list(
        UsageBucket.objects.filter(span=UsageSpan.HOUR, start__gte=since, model_name=model, errors__gt=0)
        .values_list("organization_id", flat=True)
        .distinct()[:MAX_REAPS]
    )
    if organizations:
        from apps.work.tasks import work_maintain

        def reap() -> None:
            for organization_id in organizations:
                work_maintain.delay(tenant_id=organization_id, duty="reap")

        transaction.on_commit(reap)
        actions.append(
            f"Asked the work reaper to run now in {len(organizations)} organization(s) whose calls to it "
            "failed this hour: their work whose worker stopped is requeued at once."
        )
    return " ".join(actions)


def _open(
    *, kind: str, subject: str, organization_id: int | None, verdict: Verdict, sample: Sample, provider: str
) -> Anomaly | None:
    with transaction.atomic():
        if Anomaly.objects.filter(kind=kind, subject=subject, resolved_at=None).exists():
            return None
        anomaly = Anomaly.objects.create(
            kind=kind,
            subject=subject,
            organization_id=organization_id,
            opened_at=timezone.now(),
            unit=SERIES[kind].unit,
            observed=verdict.value,
            baseline=verdict.baseline,
            threshold=verdict.threshold,
            peak=verdict.value,
            last_value=verdict.value,
            explanation=_explain(kind, subject, verdict, sample),
        )
        if kind == DEPLOYMENT_ERRORS and provider:
            anomaly.action = _act_on_errors(provider=provider, model=sample.key, anomaly=anomaly)
        elif kind == ORGANIZATION_SPEND:
            anomaly.action = "Flagged only: the organization's budgets still apply; no call is refused for this."
        else:
            anomaly.action = "Flagged only (routing policies already rank deployments by their latency and cost)."
        anomaly.save(update_fields=["action"])
    logger.warning("anomaly opened", extra={"kind": kind, "subject": subject, "value": verdict.value})
    return anomaly


def _resolve(*, kind: str, subject: str, verdict: Verdict) -> bool:
    note = (
        "\nResolved: the shift lasted; its level is the new normal."
        if verdict.relearned
        else f"\nResolved: back to {verdict.value:.6g} {SERIES[kind].unit}."
    )
    anomaly = Anomaly.objects.filter(kind=kind, subject=subject, resolved_at=None).first()
    if anomaly is None:
        return False
    anomaly.resolved_at = max(timezone.now(), anomaly.opened_at)
    anomaly.last_value = verdict.value
    anomaly.explanation += note
    anomaly.save(update_fields=["resolved_at", "last_value", "explanation"])
    logger.info("anomaly resolved", extra={"kind": kind, "subject": subject})
    return True


def _load_states(client: Any) -> dict[str, dict[str, Any]]:
    states = {}
    for raw_key, raw in client.hgetall(STATE_KEY).items():
        try:
            states[raw_key.decode()] = json.loads(raw)
        except ValueError:
            continue
    return states


def _bounded(states: dict[str, dict[str, Any]], now: float) -> dict[str, dict[str, Any]]:
    """Forget organizations' spend series idle for long (not open), and keep at most
    MAX_ORGANIZATION_SERIES of them (the most recently active)."""
    spend = [
        (key, state)
        for key, state in states.items()
        if key.startswith(ORGANIZATION_SPEND + "|")
        and (state.get("open") or now - state.get("active", now) < IDLE_FORGET_S)
    ]
    spend.sort(key=lambda item: (not item[1].get("open"), -item[1].get("active", 0)))
    kept = dict(spend[:MAX_ORGANIZATION_SERIES])
    return {**{k: v for k, v in states.items() if not k.startswith(ORGANIZATION_SPEND + "|")}, **kept}


def anomalies_detect(*, now: float | None = None) -> DetectReport:
    """One run of the detector over the traffic since the last run (at most the last hour)."""
    now = time.time() if now is None else now
    client = redis_client()
    report = DetectReport()
    if not client.set(LOCK_KEY, "1", nx=True, ex=LOCK_S):
        return report  # another run is going on
    try:
        # Deployments are judged per bucket as soon as it ends, spend per whole pair of buckets.
        last, last_pair = traffic_bucket(now) - 1, _last_complete(now)
        cursor, spend_cursor = client.mget([CURSOR_KEY, SPEND_CURSOR_KEY])
        # A first run learns from what the counters still hold (their last hour).
        hour = 3600 // TRAFFIC_BUCKET_S
        first = int(cursor) + 1 if cursor is not None else last - hour + 1
        spend_first = int(spend_cursor) + 1 if spend_cursor is not None else last_pair - hour + 1
        spend_first += spend_first % SPEND_BUCKETS  # whole pairs only
        if first > last and spend_first > last_pair:
            return report
        buckets = traffic_buckets(first=min(first, spend_first), last=last)
        states = _load_states(client)
        idle = [int(key.split("|", 1)[1]) for key in states if key.startswith(ORGANIZATION_SPEND + "|")]
        samples = samples_from(
            buckets, idle=idle, deployments_from=first, spend_from=spend_first, spend_until=last_pair
        )
        samples.sort(key=lambda sample: sample.end)
        report.buckets, report.samples = len(buckets), len(samples)
        _judge(samples, states, report, now)
        states = _bounded(states, now)
        pipe = client.pipeline(transaction=True)
        pipe.delete(STATE_KEY)
        if states:
            pipe.hset(STATE_KEY, mapping={key: json.dumps(state) for key, state in states.items()})
        pipe.set(CURSOR_KEY, str(max(last, first - 1)), ex=24 * 3600)
        pipe.set(SPEND_CURSOR_KEY, str(max(last_pair, spend_first - 1)), ex=24 * 3600)
        pipe.execute()
        _reconcile(states, report)
        return report
    finally:
        client.delete(LOCK_KEY)


def _judge(samples: list[Sample], states: dict[str, dict[str, Any]], report: DetectReport, now: float) -> None:
    providers = dict(CatalogModel.objects.values_list("name", "provider"))
    spenders = {int(s.key) for s in samples if s.kind == ORGANIZATION_SPEND}
    slugs = dict(Organization.objects.filter(pk__in=spenders).values_list("pk", "slug")) if spenders else {}
    for sample in samples:
        series = _series_id(sample.kind, sample.key)
        if sample.kind == ORGANIZATION_SPEND:
            if int(sample.key) not in slugs:
                states.pop(series, None)  # a deleted organization
                continue
            subject, organization_id = slugs[int(sample.key)], int(sample.key)
        else:
            subject, organization_id = f"{providers.get(sample.key, '?')}/{sample.key}", None
        state, verdict = series_step(SERIES[sample.kind], states.get(series) or series_new(), sample.value)
        if sample.kind != ORGANIZATION_SPEND or sample.value > 0:
            state["active"] = now
        else:
            state.setdefault("active", now)
        states[series] = state
        if verdict.opened:
            opened = _open(
                kind=sample.kind,
                subject=subject,
                organization_id=organization_id,
                verdict=verdict,
                sample=sample,
                provider=providers.get(sample.key, "") if sample.kind != ORGANIZATION_SPEND else "",
            )
            if opened is not None:
                report.opened.append(f"{sample.kind} {subject}")
        elif verdict.resolved:
            if _resolve(kind=sample.kind, subject=subject, verdict=verdict):
                report.resolved.append(f"{sample.kind} {subject}")
        elif verdict.is_open:
            Anomaly.objects.filter(kind=sample.kind, subject=subject, resolved_at=None).update(
                last_value=verdict.value,
            )
            Anomaly.objects.filter(kind=sample.kind, subject=subject, resolved_at=None, peak__lt=verdict.value).update(
                peak=verdict.value
            )


def _reconcile(states: dict[str, dict[str, Any]], report: DetectReport) -> None:
    """Open rows whose series is not open any more (its state was lost or forgotten) are resolved."""
    open_series = {key for key, state in states.items() if state.get("open")}
    providers = dict(CatalogModel.objects.values_list("name", "provider"))
    stale = []
    for anomaly in Anomaly.objects.filter(resolved_at=None):
        key = anomaly.subject.split("/", 1)[1] if anomaly.kind != ORGANIZATION_SPEND else str(anomaly.organization_id)
        if anomaly.kind != ORGANIZATION_SPEND and providers.get(key) is None:
            pass  # a model gone from the catalog: resolved below
        elif _series_id(anomaly.kind, key) in open_series:
            continue
        stale.append(anomaly.pk)
    if stale:
        Anomaly.objects.filter(Q(pk__in=stale), resolved_at=None).update(resolved_at=timezone.now())
        report.resolved.extend(f"stale {pk}" for pk in stale)


def anomaly_series_forget(*, kind: str, key: str) -> None:
    """Start a series over (warm-up again): for an operator who knows its normal has changed."""
    redis_client().hdel(STATE_KEY, _series_id(kind, key))


@transaction.atomic
def anomaly_relearn(*, anomaly: Anomaly, actor: Principal) -> Anomaly:
    """An operator's call: the series' normal has changed for good (a new model version, a price
    change). The anomaly is resolved and the series starts over (warm-up again, nothing opens until
    it has learnt the new level). Recorded in the operator log."""
    from apps.ops.services import operator_action_record

    kind = anomaly.kind
    key = str(anomaly.organization_id) if kind == ORGANIZATION_SPEND else anomaly.subject.split("/", 1)[-1]
    anomaly_series_forget(kind=kind, key=key)
    if anomaly.resolved_at is None:
        anomaly.resolved_at = max(timezone.now(), anomaly.opened_at)
        anomaly.explanation += f"\nResolved by {actor.label}: the series learns its normal level again."
        anomaly.save(update_fields=["resolved_at", "explanation"])
    operator_action_record(
        actor=actor,
        action="anomaly.relearned",
        organization=anomaly.organization,
        target=f"{kind} {anomaly.subject}",
        metadata={"anomaly": anomaly.pk},
    )
    return anomaly


def anomalies_organization_forget(*, organization_id: int) -> None:
    """Remove what Redis holds of one organization for anomaly detection (its spend series' state and
    its spend in the traffic buckets still kept), for the organization's deletion. Its `Anomaly` rows
    go with the organization (foreign key, CASCADE)."""
    client = redis_client()
    last = traffic_bucket()
    pipe = client.pipeline(transaction=False)
    pipe.hdel(STATE_KEY, _series_id(ORGANIZATION_SPEND, str(organization_id)))
    for number in range(last - 3600 // TRAFFIC_BUCKET_S, last + 2):
        pipe.hdel(traffic_key(number), f"o|{organization_id}")
    pipe.execute()
