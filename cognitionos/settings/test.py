"""The test suite: real PostgreSQL and Redis (embedded in .data/test unless given), fast hashing."""

import atexit
import os
from pathlib import Path

from cognitionos.embedded import TEST_POSTGRES_SETTINGS, default_data_dir, services_attach

os.environ.setdefault("SECRET_KEY", "test-only-not-secret-" + "x" * 40)
os.environ.setdefault("CELERY_TASK_DEFAULT_QUEUE", f"cognitionos-test-{os.getpid()}")
_data_dir = Path(os.environ.get("COGNITIONOS_TEST_DATA_DIR", default_data_dir() / "test"))
# `make test` runs the suite in processes of pytest-xdist (gw0, gw1, ...), each with a PostgreSQL and
# a Redis of its own: no key, queue, channel or mailbox is shared between two tests running at once.
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker:
    _data_dir = _data_dir.with_name(f"{_data_dir.name}-{_worker}")
# A worker inherits the URLs of the servers its parent embedded; those of another folder (xdist's
# controller's) are not its own. A test's subprocess keeps its worker's.
_embedded_dir, _, _embedded_urls = os.environ.get("COGNITIONOS_TEST_EMBEDDED", "").partition("|")
if _embedded_dir and _embedded_dir != str(_data_dir):
    for _name in _embedded_urls.split():
        os.environ.pop(_name, None)
_services = services_attach(data_dir=_data_dir, postgres_options=TEST_POSTGRES_SETTINGS)
os.environ["COGNITIONOS_TEST_EMBEDDED"] = f"{_data_dir}|" + " ".join(
    name for name, service in (("DATABASE_URL", _services.postgres), ("REDIS_URL", _services.redis)) if service
)
atexit.register(_services.stop_owned)

from .base import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
LLM_HIT_BATCH_SECONDS = 0.0  # cache hits are written at once, inside the test's transaction
LLM_OBSERVE_BATCH_SECONDS = 0.0  # routing figures too
LLM_SETTLE_BATCH_SECONDS = 0.0  # answered calls settled at once
LLM_BUDGET_FOLD_SECONDS = 0.0  # and settled holds folded into their windows
WORK_PROGRESS_NOTICE_SECONDS = 0.0  # and progress notices sent
# No schemas built ahead: a test's organizations come from the script, the same every run;
# tests/tenants/test_ready_schemas.py turns the pool on.
TENANT_READY_SCHEMAS = 0
API_KEY_LAST_USED_FLUSH_SECONDS = 0  # tests flush keys' last use themselves (apikey_last_used_flush)
OUTBOUND_ALLOW_PRIVATE_NETWORKS = True  # local webhook receivers and test servers on 127.0.0.1
# As in development: the loopback addresses are the platform host, like `localhost`.
LOOPBACK_HOSTS = ["127.0.0.1", "[::1]"]
ALLOWED_HOSTS = [*ALLOWED_HOSTS, *LOOPBACK_HOSTS]
PUBLIC_HOSTS = [*PUBLIC_HOSTS, *LOOPBACK_HOSTS]
# The whole suite calls from 127.0.0.1 and presents wrong keys on purpose; tests of the limit set
# it themselves (tests/security/test_edge.py).
API_KEY_FAILURES_PER_MINUTE = 1_000_000
# Mail is kept in a folder (the test client's own outbox replaces it in-process; server processes
# started by tests write here, or to COGNITIONOS_MAILBOX_DIR).
EMAIL_BACKEND = "apps.accounts.mail.MailboxBackend"
DEV_MAILBOX = True
MAILBOX_DIR = os.environ.get("COGNITIONOS_MAILBOX_DIR") or str(_data_dir / "mail")
# Test workers export no metrics port unless a test sets WORKER_METRICS_PORT (tests/ops/test_metrics_worker.py).
WORKER_METRICS_PORT = int(os.environ.get("WORKER_METRICS_PORT", "0"))
