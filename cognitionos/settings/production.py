"""Production: everything from the environment, HTTPS on, no debug. Passes `check --deploy`."""

import os

from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("HTTPS", "true")

from .base import *  # noqa: F403
from .env import env_str

DEBUG = False
# Organizations' own provider keys must not be encrypted under a key derived from SECRET_KEY.
CREDENTIALS_ENCRYPTION_KEYS = env_str("CREDENTIALS_ENCRYPTION_KEYS")
# /metrics is served on the public host; without a token anyone could read the platform's traffic
# figures, so production does not start without one, and one too short to resist guessing.
METRICS_TOKEN = env_str("METRICS_TOKEN")
if len(METRICS_TOKEN) < 32:
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 32 characters (secrets.token_urlsafe(32)).")
