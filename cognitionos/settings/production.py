"""Production: everything from the environment, HTTPS on, no debug. Passes `check --deploy`."""

import os

os.environ.setdefault("HTTPS", "true")

from .base import *  # noqa: F403
from .env import env_str

DEBUG = False
# Organizations' own provider keys must not be encrypted under a key derived from SECRET_KEY.
CREDENTIALS_ENCRYPTION_KEYS = env_str("CREDENTIALS_ENCRYPTION_KEYS")
