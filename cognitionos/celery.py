import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery, signals

# redis-py 8 imports the OpenTelemetry SDK's metrics package whenever it is installed, for its own
# instrumentation that we never turn on: 0.2 s more at every process start, measured here. With
# tracing off (no OTLP endpoint, apps.ops.tracing) nothing of the SDK is to load, so redis-py is told
# it is absent. This module is the first the package imports, before anything imports redis.
if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
    sys.modules.setdefault("opentelemetry.sdk.metrics", None)  # type: ignore[arg-type] # import raises ImportError

from kombu.transport import redis as kombu_redis

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cognitionos.settings.development")


class _RedisChannel(kombu_redis.Channel):
    """kombu's Redis channel builds a new redis-py client for every publish (`conn_or_acquire`), and
    redis-py 8's client constructor costs more than the LPUSH it then sends (measured here: 0.62 ms
    against 0.49 ms). One client per channel over the channel's own connection pool, built again
    only if the channel replaced its pool: redis-py clients are thread-safe, and a producer's channel
    is used by one thread at a time anyway."""

    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()  # type: ignore[attr-defined] # not in the stubs
        yield shared


# Every Redis broker connection of the process (web, workers, beat) gets the channel above; the
# broker URL picks the transport (`redis+socket://` can't name a transport class), hence here.
kombu_redis.Transport.Channel = _RedisChannel


class _Celery(Celery):
    def send_task(self, name: str, *positional: Any, **options: Any) -> Any:
        """Every send, by name or through a task's `delay`:
        - A task sent by name has no task object whose `ignore_result` applies, and Celery then
          subscribes the sending process to that task's result channel on the Redis result backend,
          for good: one more channel for every task a web process ever sent (and 0.2 ms of each
          send). Nothing here waits on a result, so the setting applies to these sends too.
        - The message describes its arguments for the worker's log (`argsrepr`, `kwargsrepr`).
          Celery writes them with its saferepr, a walk in Python that was a fifth of a send's CPU
          (0.1 of 0.5 ms, measured here); Python's repr, cut to Celery's own lengths, says the same."""
        args = positional[0] if positional else options.get("args")
        kwargs = positional[1] if len(positional) > 1 else options.get("kwargs")
        options.setdefault("ignore_result", self.conf.task_ignore_result)
        options.setdefault("argsrepr", repr(tuple(args or ()))[: self.amqp.argsrepr_maxsize])
        options.setdefault("kwargsrepr", repr(dict(kwargs or {}))[: self.amqp.kwargsrepr_maxsize])
        return super().send_task(name, *positional, **options)


app = _Celery("cognitionos")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect(weak=False)
def _tracing_worker(**_: Any) -> None:
    """Traces when an OTLP endpoint is configured (apps.ops.tracing), in the worker's main process
    before its pool starts (forked children keep it: the SDK restarts its export thread in them)."""
    from apps.llm.calls import provider_sdks_import
    from apps.ops.tracing import tracing_configure

    tracing_configure(role="worker")
    provider_sdks_import()  # before the first task, not during one


@signals.beat_init.connect(weak=False)
def _tracing_beat(**_: Any) -> None:
    from apps.ops.tracing import tracing_configure

    tracing_configure(role="beat")
