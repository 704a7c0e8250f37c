"""Mail in development: kept under the data folder and listed at /dev/mail/ on the platform host;
SMTP from the environment in production, where /dev/mail/ does not exist."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.mail import EmailMessage, get_connection
from django.test import Client

from apps.accounts.mail import mailbox_messages

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mailbox(tmp_path: Path, settings: Any) -> Path:
    settings.MAILBOX_DIR = str(tmp_path / "mail")
    return tmp_path / "mail"


def _send(to: str, subject: str, body: str) -> None:
    connection = get_connection("apps.accounts.mail.MailboxBackend")
    EmailMessage(subject=subject, body=body, to=[to], connection=connection).send()


def test_each_message_is_kept_as_a_file_and_read_back_with_its_links(mailbox: Path) -> None:
    _send("ada@example.com", "Confirm your address", "Open http://localhost:8000/accounts/confirm-email/abc/ now.")
    _send("bob@example.com", "Reset", "Go to http://acme.localhost:8000/accounts/password/reset/key/1-x/.")
    assert len(list(mailbox.glob("*.eml"))) == 2

    newest, oldest = mailbox_messages()
    assert newest.subject == "Reset" and newest.to == "bob@example.com"
    assert newest.links == ["http://acme.localhost:8000/accounts/password/reset/key/1-x/"]
    assert oldest.links == ["http://localhost:8000/accounts/confirm-email/abc/"]
    assert [m.subject for m in mailbox_messages(to="ada@example.com")] == ["Confirm your address"]


def test_development_mailbox_page_lists_messages_and_their_links(db: None, mailbox: Path) -> None:
    _send("ada@example.com", "Confirm your address", "Open http://localhost:8000/accounts/confirm-email/abc/ now.")
    page = Client(HTTP_HOST="localhost").get("/dev/mail/")
    assert page.status_code == 200
    content = page.content.decode()
    assert "Confirm your address" in content
    assert '<a href="http://localhost:8000/accounts/confirm-email/abc/">' in content


def test_development_mailbox_is_only_on_the_platform_host(db: None, mailbox: Path) -> None:
    assert Client(HTTP_HOST="tenant-a.localhost").get("/dev/mail/").status_code == 404


def test_development_mailbox_answers_404_when_turned_off(db: None, mailbox: Path, settings: Any) -> None:
    settings.DEV_MAILBOX = False
    assert Client(HTTP_HOST="localhost").get("/dev/mail/").status_code == 404


def test_production_sends_through_smtp_from_the_environment_and_has_no_mailbox_route() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "DEBUG", "HTTPS"))}
    env.update(
        DJANGO_SETTINGS_MODULE="cognitionos.settings.production",
        SECRET_KEY="p" + "roduction-secret-" * 4 + "9fK2",
        DATABASE_URL="postgresql://cognitionos:secret@db.internal:5432/cognitionos",
        REDIS_URL="redis://cache.internal:6379/0",
        CREDENTIALS_ENCRYPTION_KEYS="k1:" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode(),
        METRICS_TOKEN="m" + "etrics-token-" * 3 + "7Qx",
        EMAIL_HOST="smtp.example.com",
        EMAIL_PORT="2525",
        EMAIL_HOST_USER="mailer",
        EMAIL_HOST_PASSWORD="mail-secret",
        DEFAULT_FROM_EMAIL="CognitionOS <no-reply@example.com>",
    )
    script = (
        "import django; django.setup()\n"
        "from django.conf import settings\n"
        "from django.urls import Resolver404, resolve\n"
        "print(settings.EMAIL_BACKEND, settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_HOST_USER,"
        " settings.EMAIL_USE_TLS, settings.DEV_MAILBOX)\n"
        "try:\n"
        "    resolve('/dev/mail/', urlconf='cognitionos.urls_public')\n"
        "    print('routed')\n"
        "except Resolver404:\n"
        "    print('not routed')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == [
        "django.core.mail.backends.smtp.EmailBackend smtp.example.com 2525 mailer True False",
        "not routed",
    ]
