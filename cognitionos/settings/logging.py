"""Logs go to stderr as one line each, JSON by default (LOG_FORMAT=text: readable lines, the
default under DEBUG), with the request id, organization, work item and trace ids; secrets are
redacted (apps.ops.logs)."""

from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_str

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOG_FORMAT = env_str("LOG_FORMAT", "text" if env_bool("DEBUG", False) else "json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or text, not {LOG_FORMAT!r}.")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "apps.ops.logs.JsonFormatter"},
        "text": {"()": "apps.ops.logs.TextFormatter"},
    },
    "filters": {
        "context": {"()": "apps.ops.logs.ContextFilter"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]},
    },
    "root": {"handlers": ["stderr"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own handlers (a console copy under DEBUG, mail to ADMINS) are replaced: its
        # lines go through the one handler above, formatted and redacted like every other.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.server": {"handlers": [], "level": "INFO", "propagate": True},
        "django.db.backends": {"level": "INFO"},
        "pgserver": {"level": "WARNING"},
        # The SDKs' HTTP client (httpx2) and ours (httpx) log each request they send at INFO: a line
        # per provider call and webhook delivery (about 70 us of CPU each), all of it recorded
        # already by the ledger, the delivery log, the metrics and the traces.
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
    },
}
