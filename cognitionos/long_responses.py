"""One cap per web process on responses that hold a thread for long: model streams and progress events.

A web process has WEB_THREADS threads; a streaming response keeps one busy until it ends. Without
a cap, a few clients opening streams take every thread and the process stops answering anything,
health checks included. The cap is below the thread count, so some threads always remain for short
requests; a stream over the cap is refused at once (429 with Retry-After, in the endpoint's error
shape) rather than queued.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from django.conf import settings

T = TypeVar("T")
RETRY_AFTER_SECONDS = 5


class LongResponsesFull(Exception):
    def __init__(self, cap: int) -> None:
        super().__init__(f"this server is holding its maximum of {cap} open streams; retry shortly")
        self.cap = cap
        self.retry_after = RETRY_AFTER_SECONDS


class _Slots:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.open = 0

    def take(self) -> None:
        cap = int(settings.LONG_RESPONSES_PER_PROCESS)
        with self._lock:
            if self.open >= cap:
                raise LongResponsesFull(cap)
            self.open += 1

    def give_back(self) -> None:
        with self._lock:
            self.open -= 1


slots = _Slots()


class Slot:
    """One taken slot: `hold(content)` keeps it for the response's body, which gives it back when it
    is exhausted or closed (Django closes a streaming response's iterator when the response ends,
    also when it was never started); `give_back()` returns it if no response is made after all."""

    def __init__(self) -> None:
        self._held = True

    def give_back(self) -> None:
        if self._held:
            self._held = False
            slots.give_back()

    def hold(self, content: Iterable[T]) -> Iterator[T]:
        return _Held(content, self)


class _Held(Generic[T]):
    def __init__(self, content: Iterable[T], slot: Slot) -> None:
        self._content = content
        self._iterator = iter(content)
        self._slot = slot

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        try:
            return next(self._iterator)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._slot.give_back()
        close = getattr(self._content, "close", None)
        if close is not None:
            close()


def long_response_begin() -> Slot:
    """Take a slot before starting anything long (a refused stream must cost nothing): raises
    LongResponsesFull when the process holds its cap."""
    slots.take()
    return Slot()
