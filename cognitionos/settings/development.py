"""Local development and `make run`: embedded services, debug pages, a fixed local secret."""

import os

os.environ.setdefault("SECRET_KEY", "development-only-not-secret-" + "x" * 32)
os.environ.setdefault("DEBUG", "true")

from .base import *  # noqa: F403

WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
INTERNAL_IPS = ["127.0.0.1", "::1"]
# The addresses the server's own log prints are the platform host too, like `localhost`.
LOOPBACK_HOSTS = ["127.0.0.1", "[::1]"]
ALLOWED_HOSTS = [*ALLOWED_HOSTS, *LOOPBACK_HOSTS]
PUBLIC_HOSTS = [*PUBLIC_HOSTS, *LOOPBACK_HOSTS]
OUTBOUND_ALLOW_PRIVATE_NETWORKS = True  # local webhook receivers and test servers on 127.0.0.1
# Mail is kept under the data folder and listed at http://localhost:8000/dev/mail/.
EMAIL_BACKEND = "apps.accounts.mail.MailboxBackend"
DEV_MAILBOX = True
