"""The development mailbox: every outgoing message kept as an .eml file, and read back for /dev/mail/.

Used by the development and test settings instead of SMTP, so that a person running `make run` can
open the verification and reset links without a mail server.
"""

from __future__ import annotations

import email
import email.policy
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage as ParsedMessage
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

_LINK_RE = re.compile(r"https?://[^\s<>\"']+")
# Shown newest first; older messages stay on disk but the page lists only these.
MAILBOX_PAGE_SIZE = 50


def mailbox_dir() -> Path:
    return Path(settings.MAILBOX_DIR)


class MailboxBackend(BaseEmailBackend):
    """Writes each message to MAILBOX_DIR as `<UTC timestamp>-<random>.eml`."""

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        folder = mailbox_dir()
        folder.mkdir(parents=True, exist_ok=True)
        sent = 0
        for message in email_messages:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            target = folder / f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
            temporary = target.with_suffix(".part")
            temporary.write_bytes(message.message().as_bytes(linesep="\n"))
            temporary.rename(target)  # readers never see half a message
            sent += 1
        return sent


@dataclass(frozen=True)
class MailboxMessage:
    id: str
    to: str
    subject: str
    sent_at: datetime
    body: str
    links: list[str]


def _text_body(parsed: ParsedMessage) -> str:
    part = parsed.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    content: Any = part.get_content()
    return str(content)


def mailbox_messages(*, to: str | None = None, limit: int = MAILBOX_PAGE_SIZE) -> list[MailboxMessage]:
    """The newest messages first, optionally only those to one address."""
    folder = mailbox_dir()
    if not folder.is_dir():
        return []
    messages: list[MailboxMessage] = []
    for path in sorted(folder.glob("*.eml"), reverse=True):
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(parsed, ParsedMessage)
        recipient = str(parsed.get("To", ""))
        if to is not None and to.lower() not in recipient.lower():
            continue
        body = _text_body(parsed)
        stamp = path.name.split("-", 1)[0]
        messages.append(
            MailboxMessage(
                id=path.stem,
                to=recipient,
                subject=str(parsed.get("Subject", "")),
                sent_at=datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC),
                body=body,
                links=list(dict.fromkeys(link.rstrip(".,)") for link in _LINK_RE.findall(body))),
            )
        )
        if len(messages) >= limit:
            break
    return messages
