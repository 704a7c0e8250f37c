"""One progress stream (server-sent events) for every kind of work, woken by Redis pub/sub.

Whoever changes the state of something a client may follow (a job, a workflow run) calls
`progress_publish`; after the commit a small notice goes to a Redis channel named after the
organization and the object. An open stream waits on that channel, re-reads the object when a
notice comes (one query), and sends the events whose data changed — the same events as a poll of
the database would, because they are made by the same `poll` from the same rows.

Redis is a hint, never the source: the stream also re-reads every EVENTS_FALLBACK_SECONDS (a
notice lost, a change nobody announced), and if Redis fails it falls back to polling every
EVENTS_POLL_SECONDS (what every stream did before) and tries to subscribe again now and then. A
publish that fails is logged and forgotten: the work it announces is already committed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import redis
from django.conf import settings
from django.db import connection, transaction
from django.http import StreamingHttpResponse
from redis.backoff import NoBackoff
from redis.retry import Retry

from apps.api.errors import ApiError
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from cognitionos.background_batch import BackgroundBatch
from cognitionos.long_responses import LongResponsesFull, long_response_begin
from cognitionos.thread_safe_cache import thread_safe_cache

if TYPE_CHECKING:
    from apps.work.registry import WorkKind

logger = logging.getLogger(__name__)

# One stream stays open this long at most; clients reconnect to follow longer work.
EVENTS_STREAM_SECONDS = 600
# Re-read the object this often even without a notice (a lost notice costs at most this delay).
EVENTS_FALLBACK_SECONDS = 5.0
# Without Redis: poll this often, as every stream did before pub/sub.
EVENTS_POLL_SECONDS = 0.5
# Without Redis: try to subscribe again this often (and don't try to publish in between).
REDIS_RETRY_SECONDS = 5.0
# A comment line after this long without sending anything, so that proxies and load balancers
# don't cut an idle stream (most cut after 30-60 s of silence).
EVENTS_HEARTBEAT_SECONDS = 15.0

_REDIS_ERRORS = (redis.RedisError, OSError)


def redis_client_for(url: str) -> redis.Redis:
    """A client for progress notices: no retries and a short connect timeout (the platform's client
    retries a refused connection for about 4 s, which a publish on the work path and a stream's
    resubscription must not wait through; a missed notice costs at most the fallback read)."""
    return redis.Redis.from_url(
        url, socket_timeout=5, socket_connect_timeout=1, health_check_interval=30, retry=Retry(NoBackoff(), 0)
    )


@thread_safe_cache
def _redis() -> redis.Redis:
    return redis_client_for(settings.REDIS_URL)


# What one poll found: events as (key, event name, data), and whether the object has finished.
# None: the object is gone.
Poll = Callable[[], tuple[list[tuple[str, str, Any]], bool] | None]


def progress_channel(*, organization: Organization, topic: str, object_id: Any) -> str:
    """The channel of one followed object. Named by the organization's id and schema, so two
    organizations' objects never share a channel even when their ids are equal."""
    return f"work:progress:{organization.pk}:{organization.schema_name}:{topic}:{object_id}"


# -- publishing ---------------------------------------------------------------------------------


class _Outage:
    """When this process last failed to reach Redis for progress: while it is recent, publishing
    is skipped, so that an outage costs the work path one connect timeout, not one per change."""

    until = 0.0


def progress_publish(*, organization: Organization, topic: str, object_id: Any) -> None:
    """Tell the streams following (topic, object_id) of this organization that it changed, once
    the current transaction commits (at once outside a transaction). Never raises."""
    channel = progress_channel(organization=organization, topic=topic, object_id=object_id)
    transaction.on_commit(lambda: _publish(channel))


def _publish(channel: str) -> None:
    if settings.WORK_PROGRESS_NOTICE_SECONDS > 0:
        _notices.add(channel)
    else:
        _notices_send([channel])


def _notices_send(channels: list[str]) -> list[str]:
    """One round trip for all the notices (a job sends two, claimed and finished: on the workers'
    hot path a round trip each cost as much CPU as the job's rate-limit check). A notice that can't
    be sent is not kept: the streams' fallback reads find the change."""
    if time.monotonic() < _Outage.until:
        return []
    try:
        with _redis().pipeline(transaction=False) as pipeline:
            for channel in channels:
                pipeline.publish(channel, b"1")
            pipeline.execute()
    except _REDIS_ERRORS:
        _Outage.until = time.monotonic() + REDIS_RETRY_SECONDS
        logger.warning("progress notices not sent (Redis unreachable); streams will find them by polling")
    return []


# Keyed by channel: an object that changed twice before the send gets one notice, and its streams
# read its latest state either way.
_notices: BackgroundBatch[str] = BackgroundBatch(
    "progress notices",
    write=_notices_send,
    interval_s=lambda: settings.WORK_PROGRESS_NOTICE_SECONDS,
    keep_on_failure=False,
    key=lambda channel: channel,
)


def progress_notices_flush() -> int:
    """Send the notices waiting for the next batch now (tests; the batch's thread does it otherwise)."""
    return _notices.flush()


# -- the stream ---------------------------------------------------------------------------------


class _Notices:
    """The subscription of one stream to its channel; `wait` says whether a notice came. A Redis
    failure turns it into a plain sleep (the stream then polls) until a new subscription works."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.pubsub: Any = None
        self.retry_at = 0.0
        self.warned = False
        self.subscribe()

    @property
    def live(self) -> bool:
        return self.pubsub is not None

    def subscribe(self) -> bool:
        pubsub = _redis().pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(self.channel)
        except _REDIS_ERRORS:
            self._lost(pubsub)
            return False
        self.pubsub = pubsub
        return True

    def _lost(self, pubsub: Any) -> None:
        if not self.warned:  # once per stream: it retries every REDIS_RETRY_SECONDS
            self.warned = True
            logger.warning("progress stream polls the database: Redis unreachable", exc_info=True)
        self.pubsub = None
        self.retry_at = time.monotonic() + REDIS_RETRY_SECONDS
        with contextlib.suppress(*_REDIS_ERRORS):
            pubsub.close()

    def wait(self, seconds: float) -> bool:
        """Up to `seconds` for a notice: True when one came (or a lost subscription came back, so
        whatever was missed meanwhile must be read)."""
        end = time.monotonic() + seconds
        if self.pubsub is None:
            if time.monotonic() >= self.retry_at and self.subscribe():
                return True
            time.sleep(max(0.0, end - time.monotonic()))
            return False
        try:
            while (left := end - time.monotonic()) > 0:
                message = self.pubsub.get_message(timeout=left)
                if message is not None and message["type"] == "message":
                    # Several notices while the stream was busy need one read: drain them.
                    while self.pubsub.get_message(timeout=0) is not None:
                        pass
                    return True
        except _REDIS_ERRORS:
            self._lost(self.pubsub)
        return False

    def close(self) -> None:
        if self.pubsub is not None:
            with contextlib.suppress(*_REDIS_ERRORS):
                self.pubsub.close()
            self.pubsub = None


def progress_stream(*, organization: Organization, topic: str, object_id: Any, poll: Poll) -> StreamingHttpResponse:
    """Server-sent events for one object: each event whose data changed since it was last sent,
    until the object finishes (or EVENTS_STREAM_SECONDS pass). The stream holds one of the
    process's long-response slots (429 with Retry-After when none is free)."""
    try:
        slot = long_response_begin()
    except LongResponsesFull as exc:
        raise ApiError(429, "too_many_streams", str(exc), headers={"Retry-After": str(exc.retry_after)}) from exc
    channel = progress_channel(organization=organization, topic=topic, object_id=object_id)
    response = StreamingHttpResponse(slot.hold(_events(organization, channel, poll)), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _events(organization: Organization, channel: str, poll: Poll) -> Iterator[str]:
    sent: dict[str, str] = {}
    start = time.monotonic()
    deadline = start + EVENTS_STREAM_SECONDS
    # Subscribed before the first read: a change between the read and the subscription would be
    # announced to nobody.
    notices = _Notices(channel)
    try:
        check_at, quiet_since = start, start
        while (now := time.monotonic()) < deadline:
            if now >= check_at:
                with organization_schema(organization):  # the body runs after the request left the schema
                    found = poll()
                if notices.live:
                    _connection_release()
                if found is None:
                    return
                events, finished = found
                for key, name, data in events:
                    state = json.dumps(data, default=str, sort_keys=True)
                    if sent.get(key) != state:
                        sent[key] = state
                        quiet_since = time.monotonic()
                        yield f"event: {name}\ndata: {state}\n\n"
                if finished:
                    return
                check_at = time.monotonic() + (EVENTS_FALLBACK_SECONDS if notices.live else EVENTS_POLL_SECONDS)
            if time.monotonic() - quiet_since >= EVENTS_HEARTBEAT_SECONDS:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
            wake = min(check_at, quiet_since + EVENTS_HEARTBEAT_SECONDS, deadline)
            if notices.wait(max(0.0, wake - time.monotonic())):
                check_at = time.monotonic()
            elif not notices.live:
                # Redis went away during the wait: poll at the short interval from now on.
                check_at = min(check_at, time.monotonic() + EVENTS_POLL_SECONDS)
    finally:
        notices.close()


def _connection_release() -> None:
    """Give the database connection back to the pool between reads seconds apart: an open stream
    should not hold one of the pool's connections for its whole life (the next read costs one more
    query, `SET search_path`, on the connection it gets). Polling without Redis keeps it, as before.
    Not inside a transaction: a test's, or a caller's, would be cut."""
    if not connection.in_atomic_block:
        connection.close()


def progress_item_publish(*, organization: Organization, kind: WorkKind, item: Any) -> None:
    """`progress_publish` for a row of a kind of work that changed state (claimed, retried later,
    reaped, finished): to the object its kind says it belongs to, or to the row itself."""
    topic, object_id = kind.progress_of(item) if kind.progress_of is not None else (kind.name, item.pk)
    progress_publish(organization=organization, topic=topic, object_id=object_id)
