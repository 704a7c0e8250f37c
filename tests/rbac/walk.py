"""Every DRF view the URL configurations serve, with a concrete path for each, for the tests that
check declared permissions against the matrix."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.converters import IntConverter, UUIDConverter
from rest_framework.views import APIView

URLCONFS = ("cognitionos.urls_tenant", "cognitionos.urls_public")
# Served to anyone on purpose: the OpenAPI schema and its documentation page.
PUBLIC_VIEWS = {"api-schema", "api-docs"}


@dataclass(frozen=True)
class Endpoint:
    urlconf: str
    route: str
    name: str
    view: type[APIView]
    initkwargs: dict[str, Any]
    path: str

    @property
    def methods(self) -> list[str]:
        """The HTTP methods the view answers (HEAD and OPTIONS follow GET)."""
        return [
            method.upper()
            for method in self.view.http_method_names
            if method not in ("head", "options") and hasattr(self.view, method)
        ]


def _sample(converter: Any) -> str:
    if isinstance(converter, UUIDConverter):
        return str(uuid.uuid4())
    if isinstance(converter, IntConverter):
        return str(2**31 - 1)
    return "x"


def _walk(patterns: list[Any], prefix: str, urlconf: str) -> Iterator[Endpoint]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern), urlconf)
            continue
        assert isinstance(pattern, URLPattern)
        view = getattr(pattern.callback, "cls", None)
        if view is None or not issubclass(view, APIView):
            continue
        assert pattern.name, f"{prefix}{pattern.pattern}: an API route needs a name"
        converters = getattr(pattern.pattern, "converters", {})
        path = reverse(pattern.name, urlconf=urlconf, kwargs={name: _sample(conv) for name, conv in converters.items()})
        yield Endpoint(
            urlconf=urlconf,
            route=prefix + str(pattern.pattern),
            name=pattern.name,
            view=view,
            initkwargs=dict(getattr(pattern.callback, "initkwargs", {})),
            path=path,
        )


def api_endpoints(urlconf: str) -> list[Endpoint]:
    return list(_walk(get_resolver(urlconf).url_patterns, "", urlconf))


def declared_endpoints(urlconf: str = "cognitionos.urls_tenant") -> list[Endpoint]:
    """The endpoints that check a declared permission (everything but PUBLIC_VIEWS)."""
    return [endpoint for endpoint in api_endpoints(urlconf) if endpoint.name not in PUBLIC_VIEWS]
