"""Idempotency keys: claim before the create, complete inside it, release it if the create fails."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.api.models import IdempotencyKey


@dataclass(frozen=True)
class Claim:
    """What a request holding `key` may do: run the create (`record` set), or answer with `replay`."""

    record: IdempotencyKey | None = None
    replay: IdempotencyKey | None = None
    conflict: str | None = None  # "in_progress" or "reused"


def idempotency_claim(*, key: str, fingerprint: str) -> Claim:
    """Claim the key in its own committed statement, so a concurrent duplicate sees the claim."""
    now = timezone.now()
    expired = now - dt.timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS)
    stale = now - dt.timedelta(seconds=settings.IDEMPOTENCY_PENDING_SECONDS)
    with connection.cursor() as cursor:
        # Insert, or take over a row that expired or whose pending request died, in one statement.
        cursor.execute(
            """
            INSERT INTO api_idempotencykey AS claimed (key, fingerprint, state, created_at, claimed_at)
            VALUES (%(key)s, %(fingerprint)s, 'pending', %(now)s, %(now)s)
            ON CONFLICT (key) DO UPDATE
               SET fingerprint = EXCLUDED.fingerprint, state = 'pending', response_status = NULL,
                   response_body = NULL, created_at = EXCLUDED.created_at, claimed_at = EXCLUDED.claimed_at
             WHERE claimed.created_at < %(expired)s
                OR (claimed.state = 'pending'
                    AND claimed.claimed_at < %(stale)s
                    AND claimed.fingerprint = EXCLUDED.fingerprint)
            RETURNING id
            """,
            {"key": key, "fingerprint": fingerprint, "now": now, "expired": expired, "stale": stale},
        )
        row = cursor.fetchone()
    if row is not None:
        return Claim(record=IdempotencyKey(pk=row[0], key=key, fingerprint=fingerprint))
    existing = IdempotencyKey.objects.filter(key=key).first()
    if existing is None:  # released between our statements: the caller may simply retry
        return Claim(conflict="in_progress")
    if existing.fingerprint != fingerprint:
        return Claim(conflict="reused")
    if existing.state == IdempotencyKey.State.PENDING:
        return Claim(conflict="in_progress")
    return Claim(replay=existing)


def idempotency_complete(*, record: IdempotencyKey, status: int, body: Any) -> None:
    """Store the answer; call inside the create's transaction so both commit or neither does."""
    IdempotencyKey.objects.filter(pk=record.pk).update(
        state=IdempotencyKey.State.DONE, response_status=status, response_body=body
    )


def idempotency_release(*, record: IdempotencyKey) -> None:
    """The create failed and wrote nothing: let the client try again with the same key."""
    IdempotencyKey.objects.filter(pk=record.pk, state=IdempotencyKey.State.PENDING).delete()


def idempotency_purge(*, now: dt.datetime | None = None) -> int:
    cutoff = (now or timezone.now()) - dt.timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted
