"""Celery on Redis: late acknowledgement, one message at a time, visibility above the longest job."""

from urllib.parse import parse_qs, urlparse

from .cache import REDIS_URL
from .core import LONGEST_JOB_SECONDS
from .env import env_int, env_str
from .jobs import JOB_REAPER_SECONDS


def kombu_url(redis_url: str) -> str:
    """Translate a redis-py URL to kombu's spelling (kombu names Unix sockets `redis+socket://`)."""
    parsed = urlparse(redis_url)
    if parsed.scheme != "unix":
        return redis_url
    db = parse_qs(parsed.query).get("db", ["0"])[0]
    return f"redis+socket://{parsed.path}?virtual_host={db}"


CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", kombu_url(REDIS_URL))
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", kombu_url(REDIS_URL))
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 2 * LONGEST_JOB_SECONDS}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": 2 * LONGEST_JOB_SECONDS}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE", "cognitionos")
# A worker's main process serves its Prometheus metrics on this port (apps.ops.celery_metrics); 0: off.
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 9808)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Task modules autodiscovery (`<app>.tasks`) does not find.
CELERY_IMPORTS = ("apps.ops.anomaly_tasks",)
CELERY_WORKER_SEND_TASK_EVENTS = False
# Beat keeps the schedule in Redis and sends only while it holds a Redis lock (apps.ops.beat, on
# celery-redbeat): a second beat started by mistake waits and sends nothing until the first stops.
CELERY_BEAT_SCHEDULER = "apps.ops.beat:BeatScheduler"
# redis-py's spelling (unix:// for the embedded Redis), not kombu's.
CELERY_REDBEAT_REDIS_URL = REDIS_URL
CELERY_REDBEAT_REDIS_OPTIONS: dict[str, object] = {}
CELERY_REDBEAT_KEY_PREFIX = "beat:"
# The lock lives this long unless the holder's next tick extends it: a beat killed without warning
# (SIGKILL, a lost node) holds off its successor this long at most. Beat ticks at least every
# CELERY_BEAT_MAX_LOOP_INTERVAL seconds, well inside it.
CELERY_REDBEAT_LOCK_TIMEOUT = 60
CELERY_BEAT_MAX_LOOP_INTERVAL = 10
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    # Budget holds whose call died with its process are settled from their reservation.
    "llm-holds-sweep": {"task": "apps.llm.tasks.llm_holds_sweep_all", "schedule": 60.0},
    # Settled ledger rows are added to the public usage rollup (off the request path).
    "llm-usage-fold": {"task": "apps.llm.tasks.llm_usage_fold_all", "schedule": 60.0},
    # Hour buckets of usage (the dashboard's short ranges) past USAGE_HOUR_BUCKETS_DAYS are deleted;
    # day buckets stay.
    "llm-usage-hours-prune": {"task": "apps.llm.tasks.llm_usage_hours_prune", "schedule": 3600.0},
    # The platform's budget of plans without overage follows the plan when only the clock changed it
    # (a grace period or a cancelled subscription's period ending).
    "llm-plan-budgets-sync": {"task": "apps.llm.tasks.llm_plan_budgets_sync_all", "schedule": 3600.0},
    # Settled ledger rows of organizations on a plan that bills usage are sent to Stripe's billing
    # meter (apps.billing.metering: each row once, marked after Stripe accepts it).
    "billing-meters-push": {"task": "apps.billing.tasks.billing_meters_push_all", "schedule": 60.0},
    # Operators' complimentary plans, trials and overrides whose end date passed return the
    # organization to the plan its subscription pays for (apps.billing.operator_services).
    "billing-plan-grants-expire": {"task": "apps.billing.tasks.billing_plan_grants_expire", "schedule": 300.0},
    # Stored prompts and answers past each organization's retention are deleted.
    "llm-content-sweep": {"task": "apps.llm.tasks.llm_content_sweep_all", "schedule": 3600.0},
    # The one per-tenant fan-out of background work (apps.work.tasks), three duties:
    # reap - jobs, workflow steps and webhook deliveries whose worker died (heartbeat stopped) are
    # requeued or failed,
    # and admitted work no worker took is sent again;
    "work-reap": {
        "task": "apps.work.tasks.work_maintain_all",
        "schedule": float(JOB_REAPER_SECONDS),
        "kwargs": {"duty": "reap"},
    },
    # sweep - job prompts and answers, workflow run inputs and outputs, webhook payloads are kept only
    # as long as the organization allows (suspended and past-due organizations included);
    "work-content-sweep": {
        "task": "apps.work.tasks.work_maintain_all",
        "schedule": 3600.0,
        "kwargs": {"duty": "sweep"},
    },
    # dispatch - webhook retries, scheduled in the database (next_attempt_at), are sent when due.
    "work-dispatch": {
        "task": "apps.work.tasks.work_maintain_all",
        "schedule": 10.0,
        "kwargs": {"duty": "dispatch"},
    },
    # Idempotency-Keys are kept for a day.
    "api-idempotency-purge": {"task": "apps.api.tasks.idempotency_keys_purge_all", "schedule": 3600.0},
    # Audit events are chained after commit by a task per organization; this catches any left behind.
    "audit-chain-sweep": {"task": "apps.audit.tasks.audit_chain_sweep_all", "schedule": 60.0},
    # Anomaly detection and self-healing (apps.ops.anomalies): deployments' latency, error rate and
    # cost per request, organizations' spend; a failing deployment's breaker is opened.
    "ops-anomalies-detect": {"task": "apps.ops.anomaly_tasks.anomalies_detect_run", "schedule": 15.0},
    # Schemas built ahead of sign-ups are kept at TENANT_READY_SCHEMAS, and those of an older template
    # state dropped (apps.tenants.services.ready_schemas_refill); each sign-up also asks for a refill.
    "tenants-ready-schemas": {"task": "apps.tenants.tasks.ready_schemas_keep_filled", "schedule": 60.0},
    # Organizations whose scheduled deletion is due are purged (apps.ops.deletion); a purge cut short
    # is finished by the next run.
    "organizations-purge-due": {"task": "apps.ops.tasks.organizations_purge_due", "schedule": 600.0},
}
