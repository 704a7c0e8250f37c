"""functools.cache for the process-wide clients, safe when the first calls race.

functools.cache may run a factory twice for the same arguments when two threads (web
workers, threaded Celery pools) ask at once, and keeps the later result. The earlier client is then
dropped while the thread that made it still uses it, and the SDK clients close their connections
when dropped (`redis.Redis`, `openai.OpenAI` and `anthropic.Anthropic` in `__del__`): the other
thread's request fails with a closed socket. Here the factory runs under a lock, once per arguments.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def thread_safe_cache(factory: Callable[P, T]) -> Callable[P, T]:
    cached: dict[Any, T] = {}
    creation = threading.Lock()

    @functools.wraps(factory)
    def get(*args: P.args, **kwargs: P.kwargs) -> T:
        key = (args, tuple(sorted(kwargs.items()))) if kwargs else args  # every call: keep it cheap
        try:
            return cached[key]  # the hot path takes no lock: a dict read is atomic
        except KeyError:
            pass
        with creation:
            if key not in cached:
                cached[key] = factory(*args, **kwargs)
            return cached[key]

    get.cache_clear = cached.clear  # type: ignore[attr-defined]
    return get
