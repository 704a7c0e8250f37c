"""The PostgreSQL engine under django-tenants (ORIGINAL_BACKEND): django-prometheus's, which counts
and times every statement, with its cursor class made once per process and its metrics' children
looked up once per class. django-prometheus makes a new class at every connection checkout (each
request and task takes one from the pool): 2.4% of the web process's CPU on a gateway miss; and its
cursor looks up each labelled child on every statement, under the metric's lock: 4% of a job
worker's CPU (py-spy profiles). The series are django-prometheus' own, with the same labels."""

from __future__ import annotations

import functools
from typing import Any

from django_prometheus.db import (  # type: ignore[import-untyped]
    errors_total,
    execute_many_total,
    execute_total,
    query_duration_seconds,
)
from django_prometheus.db.backends.postgresql import base  # type: ignore[import-untyped]


@functools.cache
def exporting_cursor_class(cursor_class: type[Any], alias: str, vendor: str) -> type[Any]:
    """`cursor_class` counting and timing its statements, as django-prometheus' ExportingCursorWrapper."""
    executed, executed_many = execute_total.labels(alias, vendor), execute_many_total.labels(alias, vendor)
    duration = query_duration_seconds.labels(alias, vendor)

    class ExportingCursor(cursor_class):
        def execute(self, *args: Any, **kwargs: Any) -> Any:
            executed.inc()
            try:
                with duration.time():
                    return super().execute(*args, **kwargs)
            except Exception as exc:
                errors_total.labels(alias, vendor, type(exc).__name__).inc()
                raise

        def executemany(self, query: Any, param_list: Any, *args: Any, **kwargs: Any) -> Any:
            executed.inc(len(param_list))
            executed_many.inc(len(param_list))
            try:
                with duration.time():
                    return super().executemany(query, param_list, *args, **kwargs)
            except Exception as exc:
                errors_total.labels(alias, vendor, type(exc).__name__).inc()
                raise

    return ExportingCursor


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self) -> dict[str, Any]:
        # Django's parameters, skipping django-prometheus's override, which would make the class anew.
        params: dict[str, Any] = super(base.DatabaseWrapper, self).get_connection_params()
        params["cursor_factory"] = exporting_cursor_class(params["cursor_factory"], self.alias, self.vendor)
        return params
