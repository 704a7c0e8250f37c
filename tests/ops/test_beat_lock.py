"""Two Celery beat processes on one Redis: only the holder of the lock sends (apps.ops.beat).

Each test starts real `celery beat` processes with the project's app and settings (the scheduler
and lock of cognitionos/settings/celery.py), a schedule of one entry every half second, its own
queue and its own Redis key prefix. Nothing consumes the queue, so every message a beat sent is
still there, and its `origin` header names the process that sent it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings

from apps.ops.beat import HEARTBEAT_ACTIVE, HEARTBEAT_STANDBY, BeatScheduler

ROOT = Path(__file__).resolve().parents[2]
EVERY_SECONDS = 0.5
LOCK_SECONDS = 4  # the lock's lifetime here (production: CELERY_REDBEAT_LOCK_TIMEOUT, 60 s)

# The project's Celery app as `celery beat` runs it, with a fast schedule and a short lock.
BEAT_SCRIPT = f"""
import os
from cognitionos.celery import app
app.conf.beat_schedule = {{"probe": {{"task": "tests.ops.beat_probe", "schedule": {EVERY_SECONDS}}}}}
app.conf.redbeat_key_prefix = os.environ["TEST_BEAT_PREFIX"]
app.conf.redbeat_lock_timeout = {LOCK_SECONDS}
app.conf.beat_max_loop_interval = 1
app.start(["beat", "--loglevel", "INFO"])
"""


class Beats:
    """The beat processes of one test, their queue and heartbeat files."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.queue = f"test-beat-{uuid.uuid4().hex}"
        self.prefix = f"test-beat-{uuid.uuid4().hex}:"
        self.redis = redis.Redis.from_url(settings.REDIS_URL)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "cognitionos.settings.test",
            "CELERY_TASK_DEFAULT_QUEUE": self.queue,
            "TEST_BEAT_PREFIX": self.prefix,
            "BEAT_HEARTBEAT_FILE": str(self.heartbeat(name)),
        }
        log = (self.tmp_path / f"{name}.log").open("wb")
        process = subprocess.Popen([sys.executable, "-c", BEAT_SCRIPT], cwd=ROOT, env=env, stdout=log, stderr=log)
        self.processes[name] = process
        return process

    def heartbeat(self, name: str) -> Path:
        return self.tmp_path / f"{name}.heartbeat"

    def state(self, name: str) -> str | None:
        path = self.heartbeat(name)
        return path.read_text().strip() if path.exists() else None

    def senders(self) -> list[int]:
        """The process id of each message's sender, oldest first (Celery's origin: gen<pid>@<host>)."""
        messages = [json.loads(raw) for raw in self.redis.lrange(self.queue, 0, -1)]
        assert all(message["headers"]["task"] == "tests.ops.beat_probe" for message in messages)
        # kombu's Redis transport pushes on the left: the newest message is first.
        return [int(message["headers"]["origin"].split("@")[0].removeprefix("gen")) for message in reversed(messages)]

    def wait(self, condition: Callable[[], bool], *, timeout: float, what: str) -> float:
        started = time.monotonic()
        while not condition():
            for name, process in self.processes.items():
                if process.poll() is not None and process.returncode not in (0, -signal.SIGKILL, -signal.SIGTERM):
                    log = (self.tmp_path / f"{name}.log").read_text()
                    pytest.fail(f"beat {name} exited with {process.returncode}:\n{log}")
            if time.monotonic() - started > timeout:
                logs = "\n".join((self.tmp_path / f"{name}.log").read_text() for name in self.processes)
                pytest.fail(f"timed out waiting for {what}:\n{logs}")
            time.sleep(0.1)
        return time.monotonic() - started

    def start_two(self) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
        """Two beats started together: (the one that took the lock, the one that waits)."""
        self.start("a")
        self.start("b")

        def one_active_one_waiting() -> bool:
            return {self.state("a"), self.state("b")} == {HEARTBEAT_ACTIVE, HEARTBEAT_STANDBY}

        self.wait(one_active_one_waiting, timeout=90, what="one beat active, one waiting")
        holder = "a" if self.state("a") == HEARTBEAT_ACTIVE else "b"
        waiter = "b" if holder == "a" else "a"
        return self.processes[holder], self.processes[waiter]

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
        self.redis.delete(self.queue, *self.redis.keys(self.prefix + "*"))
        self.redis.close()


@pytest.fixture
def beats(tmp_path: Path) -> Iterator[Beats]:
    started = Beats(tmp_path)
    try:
        yield started
    finally:
        started.close()


def test_a_second_beat_waits_and_sends_nothing_until_the_first_stops(beats: Beats) -> None:
    first, second = beats.start_two()

    # Both running for a while: every message comes from the first, at the schedule's pace (not twice it).
    sent_before = len(beats.senders())
    window_started = time.monotonic()
    time.sleep(4)
    window = time.monotonic() - window_started
    senders = beats.senders()
    assert set(senders) == {first.pid}
    assert second.poll() is None
    sent_in_window = len(senders) - sent_before
    assert window / EVERY_SECONDS - 3 <= sent_in_window <= window / EVERY_SECONDS + 2, sent_in_window

    # SIGTERM (what Kubernetes sends): the first releases the lock on its way out, the second takes over.
    first.send_signal(signal.SIGTERM)
    handover = beats.wait(lambda: second.pid in beats.senders(), timeout=10, what="the second beat to send")
    print(f"the second beat sent {handover:.2f} s after SIGTERM to the first")
    assert handover < 3  # released, not expired (the lock lives LOCK_SECONDS)
    assert first.wait(timeout=30) == 0
    senders = beats.senders()
    switch = senders.index(second.pid)
    assert set(senders[:switch]) == {first.pid} and set(senders[switch:]) == {second.pid}


def test_a_beat_killed_outright_holds_the_schedule_off_until_its_lock_expires(beats: Beats) -> None:
    first, second = beats.start_two()
    beats.wait(lambda: len(beats.senders()) >= 2, timeout=10, what="the first beat to send")

    first.send_signal(signal.SIGKILL)  # no chance to release the lock
    first.wait(timeout=30)
    killed_at = time.monotonic()
    sent_by_first = len(beats.senders())
    beats.wait(lambda: second.pid in beats.senders(), timeout=LOCK_SECONDS + 10, what="the second beat to send")
    waited = time.monotonic() - killed_at
    print(f"the second beat sent {waited:.2f} s after the first was killed (lock lifetime {LOCK_SECONDS} s)")
    # Nobody sent while the dead beat's lock lived on: the second waited for it to expire.
    assert waited >= LOCK_SECONDS - 1.5
    assert set(beats.senders()[:sent_by_first]) == {first.pid}
    assert set(beats.senders()[sent_by_first:]) == {second.pid}


def test_the_project_settings_reach_redbeat_under_the_celery_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """CELERY_REDBEAT_* arrive under Celery's namespace, where RedBeat's own lookup misses them: it
    would fall back to the broker's URL (kombu's spelling, which redis-py can't open for a socket)."""
    from cognitionos.celery import app

    monkeypatch.delattr(app, "redbeat_conf", raising=False)
    scheduler = BeatScheduler(app, lazy=True)
    assert app.conf.beat_scheduler == "apps.ops.beat:BeatScheduler"
    assert getattr(app, "redbeat_conf").redis_url == settings.REDIS_URL  # noqa: B009 - set by RedBeat, not typed
    assert scheduler.lock_key == "beat::lock"
    assert scheduler.lock_timeout == settings.CELERY_REDBEAT_LOCK_TIMEOUT == 60
    assert scheduler.max_interval == settings.CELERY_BEAT_MAX_LOOP_INTERVAL == 10


def test_beat_refuses_a_lock_that_could_lapse_between_two_ticks() -> None:
    from cognitionos.celery import app

    with pytest.raises(ValueError, match="at least three beat ticks"):
        BeatScheduler(app, lazy=True, max_interval=30)  # the lock lives 60 s
