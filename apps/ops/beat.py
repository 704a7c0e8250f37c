"""Celery beat that can't send twice: one lock in Redis, and only its holder sends.

celery-redbeat keeps the schedule (each entry's last run) in Redis and takes a Redis lock before
beat's first tick; every tick extends the lock, and a tick that finds the lock gone (it expired and
another beat took it) raises, so that beat stops instead of sending beside the new holder. A second
beat started by mistake (a stray `celery beat`, an old pod still terminating) waits for the lock
and sends nothing meanwhile; a beat stopped with SIGTERM releases the lock on its way out, one
killed outright holds it off for CELERY_REDBEAT_LOCK_TIMEOUT seconds at most.

What is ours: the waiting beat says so in its log and in a heartbeat file every
`max_interval`, and the sending beat writes the file after each tick. The file's age is the
container's liveness (the loop turns) and its word ("active" or "standby") its readiness (this one
sends), without a round trip to Redis: deploy/kubernetes/base/beat.yaml.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from celery.signals import beat_init
from redbeat import schedulers as redbeat  # type: ignore[import-untyped] # no type hints

logger = logging.getLogger("celery.beat")

HEARTBEAT_ENV = "BEAT_HEARTBEAT_FILE"
HEARTBEAT_ACTIVE = "active"
HEARTBEAT_STANDBY = "standby"
REDBEAT_SETTINGS = (
    "redbeat_redis_url",
    "redbeat_redis_options",
    "redbeat_key_prefix",
    "redbeat_lock_key",
    "redbeat_lock_timeout",
)
# How often a waiting beat asks for the lock again (redis-py polls at this pace while it blocks).
LOCK_POLL_SECONDS = 0.5


def beat_heartbeat_path() -> Path:
    """Where beat writes its heartbeat (BEAT_HEARTBEAT_FILE, else cognitionos-beat in the temp folder)."""
    configured = os.environ.get(HEARTBEAT_ENV)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "cognitionos-beat"


def beat_heartbeat_write(*, state: str) -> None:
    """Replace the heartbeat file atomically (a probe never reads half a word)."""
    path = beat_heartbeat_path()
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(state + "\n")
    partial.replace(path)


class BeatScheduler(redbeat.RedBeatScheduler):
    """RedBeat's scheduler; it sends only while it holds the lock, and writes the heartbeat."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        # Django's CELERY_REDBEAT_* settings reach the app under the CELERY namespace, where
        # RedBeat's own lookup misses them (it would fall back to the broker's URL and options).
        app.conf.update({name: app.conf.get(name) for name in REDBEAT_SETTINGS if app.conf.get(name) is not None})
        super().__init__(app, **kwargs)
        if not self.lock_key:
            raise ValueError("beat needs its Redis lock: set CELERY_REDBEAT_LOCK_KEY to a name, not empty")
        # The holder extends the lock once per tick; ticks are at most max_interval apart.
        if self.lock_timeout < 3 * self.max_interval:
            raise ValueError(
                f"CELERY_REDBEAT_LOCK_TIMEOUT ({self.lock_timeout} s) must be at least three beat ticks "
                f"(CELERY_BEAT_MAX_LOOP_INTERVAL {self.max_interval} s), or the lock lapses between them"
            )

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if self.lock is None:
            # Taking the lock failed at start (Redis unreachable): never send without it.
            raise RuntimeError("beat does not hold its Redis lock; stopping rather than sending without it")
        # RedBeat extends the lock first and raises LockNotOwnedError if another beat holds it now.
        interval = float(super().tick(*args, **kwargs))
        beat_heartbeat_write(state=HEARTBEAT_ACTIVE)
        return interval


def beat_lock_acquire(*, scheduler: BeatScheduler) -> None:
    """Block until this beat holds the lock, saying every max_interval that it waits."""
    client = redbeat.get_redis(scheduler.app)
    lock = client.lock(scheduler.lock_key, timeout=scheduler.lock_timeout, sleep=LOCK_POLL_SECONDS)
    # RedBeat's extend script sets the lifetime anew instead of adding to what is left.
    lock.lua_extend = client.register_script(redbeat.LUA_EXTEND_TO_SCRIPT)
    beat_heartbeat_write(state=HEARTBEAT_STANDBY)
    while not lock.acquire(blocking=True, blocking_timeout=scheduler.max_interval):
        logger.warning(
            "beat: another beat holds the lock %s; this one sends nothing until it is released or expires",
            scheduler.lock_key,
        )
        beat_heartbeat_write(state=HEARTBEAT_STANDBY)
    scheduler.lock = lock
    logger.info("beat: acquired the lock %s; sending the schedule", scheduler.lock_key)
    beat_heartbeat_write(state=HEARTBEAT_ACTIVE)


def _on_beat_init(sender: Any = None, **kwargs: Any) -> None:
    if isinstance(sender.scheduler, BeatScheduler):
        beat_lock_acquire(scheduler=sender.scheduler)
    else:
        redbeat.acquire_distributed_beat_lock(sender=sender, **kwargs)


# RedBeat's own handler takes the lock without a word while it waits; ours replaces it (and hands
# any other RedBeat scheduler back to it).
beat_init.disconnect(redbeat.acquire_distributed_beat_lock)
beat_init.connect(_on_beat_init, weak=False)
