"""Jobs: heartbeats of running jobs and the reaper that recovers jobs whose worker died."""

from .env import env_int, env_str

# A running job's worker touches its row this often...
JOB_HEARTBEAT_SECONDS = env_int("JOB_HEARTBEAT_SECONDS", 10)
# ...and the reaper takes it back when the row has not been touched for this long.
JOB_HEARTBEAT_TIMEOUT_SECONDS = env_int("JOB_HEARTBEAT_TIMEOUT_SECONDS", 60)
# An admitted job that no worker started for this long is sent again (its message may sit with a
# dead worker until the broker's visibility timeout); a duplicate delivery is harmless.
JOB_DISPATCH_RESEND_SECONDS = env_int("JOB_DISPATCH_RESEND_SECONDS", 300)
# A job whose workers died this many times fails instead of running again.
JOB_MAX_RUNS = env_int("JOB_MAX_RUNS", 3)
JOB_REAPER_SECONDS = env_int("JOB_REAPER_SECONDS", 30)
# Notices to the progress streams (claimed, finished) are sent in batches this often, one Redis
# round trip each (0: at once, as the tests do).
WORK_PROGRESS_NOTICE_SECONDS = float(env_str("WORK_PROGRESS_NOTICE_SECONDS", "0.05"))

# Data export (apps.audit.exports): the build stops as a failure (export_too_large) as soon as the zip
# passes this size; the one-time download link lasts this long.
DATA_EXPORT_MAX_BYTES = env_int("DATA_EXPORT_MAX_BYTES", 2 * 1024**3)
DATA_EXPORT_LINK_SECONDS = env_int("DATA_EXPORT_LINK_SECONDS", 24 * 3600)
# Rows fetched per round trip from a table's server-side cursor (memory stays bounded by this).
DATA_EXPORT_BATCH_ROWS = env_int("DATA_EXPORT_BATCH_ROWS", 1000)
