"""The WSGI application: Django's handler, and a second one with a shorter middleware chain for the
model API.

The OpenAI- and Anthropic-compatible endpoints (`/v1/...`) are called by programs with an API key,
never with a browser session. Sessions, CSRF, sign-in, allauth, MFA, htmx, static files, messages
and the plan-refusal pages do nothing for them, yet cost about a tenth of a cache hit's CPU. Their
requests go through a handler whose chain is settings.MIDDLEWARE without BROWSER_ONLY_MIDDLEWARE,
in the same order (request ids, metrics, tenant resolution, security headers, tracing when on).
"""

import os
from collections.abc import Callable, Iterable
from typing import Any

from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application

from apps.ops.tracing import tracing_configure

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cognitionos.settings.development")

# Traces when an OTLP endpoint is configured (nothing of OpenTelemetry is imported otherwise);
# before the application loads its middleware, which the Django instrumentation joins.
tracing_configure(role="web")

full_application = get_wsgi_application()

from django.conf import settings  # noqa: E402 - configured now


class _ChainHandler(WSGIHandler):
    """A Django handler whose middleware chain is `middleware`, not settings.MIDDLEWARE."""

    def __init__(self, middleware: list[str]) -> None:
        self.middleware_paths = middleware
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        # BaseHandler.load_middleware reads settings.MIDDLEWARE, and only here: this chain stands in
        # for it while the handler is built, at import, before any request.
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = self.middleware_paths
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


def api_middleware() -> list[str]:
    return [path for path in settings.MIDDLEWARE if path not in settings.BROWSER_ONLY_MIDDLEWARE]


API_PATH_PREFIX = "/v1/"
api_application = _ChainHandler(api_middleware())


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    handler = api_application if environ.get("PATH_INFO", "").startswith(API_PATH_PREFIX) else full_application
    return handler(environ, start_response)


from apps.llm.calls import provider_sdks_import  # noqa: E402 - the apps are loaded now

provider_sdks_import()  # as the process starts, not during its first provider call

from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns  # noqa: B018 - imports every view module now, not in the first requests
