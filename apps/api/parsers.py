"""The API's one JSON parser: bounded in size and nesting, strict about numbers.

DRF's JSONParser reads the whole body (older DRF read the stream past Django's
DATA_UPLOAD_MAX_MEMORY_SIZE; 3.18 reads `request.body`, refused over it as a 400, not a 413) and
json recurses once per nesting level, so a large or deeply nested body costs a worker its memory or
answers a 500. This one refuses a body over API_MAX_REQUEST_BYTES before reading it (by its
Content-Length) and while reading it (never more than the limit plus one byte), and nesting deeper
than bounded_json allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any, NoReturn

from django.conf import settings
from rest_framework import exceptions
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer

from apps.api.errors import ApiError
from cognitionos.bounded_json import JsonTooDeep, json_loads_bounded


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "request_too_large", f"the request body is over {limit} bytes")


def _refuse_constant(name: str) -> NoReturn:
    # PostgreSQL's JSON has no NaN or Infinity: stored, they would fail later as a server error.
    raise ValueError(f"{name} is not a JSON number")


def _declared_length(parser_context: Mapping[str, Any]) -> int:
    request = parser_context.get("request")
    meta = getattr(request, "META", {})
    try:
        return int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


class BoundedJSONParser(BaseParser):
    """Not a JSONParser subclass on purpose: DRF hands those `request.body`, read whole (and refused
    with a 400 over DATA_UPLOAD_MAX_MEMORY_SIZE); this one gets the stream and reads it bounded."""

    media_type = "application/json"
    renderer_class = JSONRenderer

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        parser_context = parser_context or {}
        limit: int = settings.API_MAX_REQUEST_BYTES
        if _declared_length(parser_context) > limit:
            raise _too_large(limit)
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise _too_large(limit)
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            return json_loads_bounded(body.decode(encoding), parse_constant=_refuse_constant)
        except JsonTooDeep as exc:
            raise ApiError(400, "json_too_deep", str(exc)) from exc
        except ValueError as exc:  # UnicodeDecodeError included
            raise exceptions.ParseError(f"JSON parse error - {exc}") from exc
