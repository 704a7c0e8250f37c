"""Server-sent events for an object's progress, by polling the database (no broker needed)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from django.http import StreamingHttpResponse

from apps.api.errors import ApiError
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from cognitionos.long_responses import LongResponsesFull, long_response_begin

# One stream stays open this long at most; clients reconnect to follow longer work.
EVENTS_STREAM_SECONDS = 600
EVENTS_POLL_SECONDS = 0.5

# What one poll found: events as (key, event name, data), and whether the object has finished.
# None: the object is gone.
Poll = Callable[[], tuple[list[tuple[str, str, Any]], bool] | None]


def event_stream(*, organization: Organization, poll: Poll) -> StreamingHttpResponse:
    """Send each event whose data changed since it was last sent, until the object finishes. The
    stream holds one of the process's long-response slots (429 with Retry-After when none is free)."""
    try:
        slot = long_response_begin()
    except LongResponsesFull as exc:
        raise ApiError(429, "too_many_streams", str(exc), headers={"Retry-After": str(exc.retry_after)}) from exc
    response = StreamingHttpResponse(slot.hold(_events(organization, poll)), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _events(organization: Organization, poll: Poll) -> Iterator[str]:
    sent: dict[str, str] = {}
    deadline = time.monotonic() + EVENTS_STREAM_SECONDS
    while time.monotonic() < deadline:
        with organization_schema(organization):  # the body runs after the request left the schema
            found = poll()
        if found is None:
            return
        events, finished = found
        for key, name, data in events:
            state = json.dumps(data, default=str, sort_keys=True)
            if sent.get(key) != state:
                sent[key] = state
                yield f"event: {name}\ndata: {state}\n\n"
        if finished:
            return
        time.sleep(EVENTS_POLL_SECONDS)
