"""The PostgreSQL engine under django-tenants (ORIGINAL_BACKEND): django-prometheus's, which counts
and times every statement, with its cursor class made once per process. django-prometheus makes a
new class at every connection checkout (each request and task takes one from the pool): 2.4% of
the web process's CPU on a gateway miss, in a py-spy profile."""

from __future__ import annotations

import functools
from typing import Any

from django_prometheus.db.backends.postgresql import base  # type: ignore[import-untyped]
from django_prometheus.db.common import ExportingCursorWrapper  # type: ignore[import-untyped]

exporting_cursor_class = functools.cache(ExportingCursorWrapper)


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self) -> dict[str, Any]:
        # Django's parameters, skipping django-prometheus's override, which would make the class anew.
        params: dict[str, Any] = super(base.DatabaseWrapper, self).get_connection_params()
        params["cursor_factory"] = exporting_cursor_class(params["cursor_factory"], self.alias, self.vendor)
        return params
