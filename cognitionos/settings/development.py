"""Local development and `make run`: embedded services, debug pages, a fixed local secret."""

import os

os.environ.setdefault("SECRET_KEY", "development-only-not-secret-" + "x" * 32)
os.environ.setdefault("DEBUG", "true")

from .base import *  # noqa: F403

WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
INTERNAL_IPS = ["127.0.0.1"]
OUTBOUND_ALLOW_PRIVATE_NETWORKS = True  # local webhook receivers and test servers on 127.0.0.1
