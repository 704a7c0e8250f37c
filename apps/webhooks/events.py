"""The event types an endpoint can subscribe to, and how a subscription matches an event.

A subscription is a list of entries: an event type (`job.succeeded`), every type of a family
(`job.*`), or `*` for everything. Events emitted with an explicit endpoint (a job's own webhook,
`webhook.test`) go to that endpoint whatever it subscribed to.
"""

from __future__ import annotations

from collections.abc import Iterable

EVENT_TYPES: dict[str, str] = {
    "job.succeeded": "A job finished with a result.",
    "job.failed": "A job failed; the payload carries the error class and message.",
    "job.cancelled": "A job was cancelled before it finished.",
    "run.succeeded": "A workflow run finished; the payload carries its output.",
    "run.failed": "A workflow run failed at a step.",
    "run.cancelled": "A workflow run was cancelled.",
    "webhook.test": "Sent on request, to check an endpoint (POST /api/v1/webhooks/{id}/test).",
}
ALL = "*"
MAX_SUBSCRIPTIONS = 50


class EventsInvalid(ValueError):
    pass


def _families() -> set[str]:
    return {event_type.split(".", 1)[0] for event_type in EVENT_TYPES}


def events_normalize(events: Iterable[object]) -> list[str]:
    """Validate a subscription list; returns it without duplicates, in the given order."""
    result: list[str] = []
    families = _families()
    for entry in events:
        if not isinstance(entry, str):
            raise EventsInvalid("each event must be a string")
        if entry != ALL and entry not in EVENT_TYPES:
            family, _, rest = entry.partition(".")
            if rest != "*" or family not in families:
                known = ", ".join(sorted(EVENT_TYPES))
                raise EventsInvalid(f"unknown event type {entry!r}; use one of {known}, a family like 'job.*', or '*'")
        if entry not in result:
            result.append(entry)
    if not result:
        raise EventsInvalid("subscribe to at least one event type (or '*')")
    if len(result) > MAX_SUBSCRIPTIONS:
        raise EventsInvalid(f"at most {MAX_SUBSCRIPTIONS} event types")
    return result


def subscription_entries(event_type: str) -> list[str]:
    """The subscription entries that match `event_type`."""
    return [ALL, event_type, f"{event_type.split('.', 1)[0]}.*"]
