"""Production: everything from the environment, HTTPS on, no debug. Passes `check --deploy`."""

import os

os.environ.setdefault("HTTPS", "true")

from .base import *  # noqa: F403

DEBUG = False
