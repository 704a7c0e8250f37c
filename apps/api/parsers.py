"""The API's one JSON parser: bounded in size and nesting, strict about numbers.

DRF's JSONParser reads the whole body (older DRF read the stream past Django's
DATA_UPLOAD_MAX_MEMORY_SIZE; 3.18 reads `request.body`, refused over it as a 400, not a 413) and
json recurses once per nesting level, so a large or deeply nested body costs a worker its memory or
answers a 500. This one refuses a body over API_MAX_REQUEST_BYTES before reading it (by its
Content-Length) and while reading it (never more than the limit plus one byte), and nesting deeper
than bounded_json allows.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import IO, Any, NoReturn

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.files.uploadedfile import InMemoryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from django.http.multipartparser import MultiPartParserError
from rest_framework import exceptions
from rest_framework.parsers import BaseParser, DataAndFiles
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


# Room for a multipart body's other fields, part headers and boundaries beside its files: those
# fields are bounded by DATA_UPLOAD_MAX_MEMORY_SIZE (Django's parser refuses more), the rest is small.
_MULTIPART_FRAMING_BYTES = 64 * 1024


class BoundedUploadHandler(FileUploadHandler):
    """Keeps uploaded files in memory and refuses (413) the moment their bytes pass `limit`, so a
    body is never read further than the limit whatever its Content-Length claims. Memory, not a
    temporary file: the caller hands the bytes to a service anyway, and never more than `limit`."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.received = 0
        self.buffer = io.BytesIO()

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.buffer = io.BytesIO()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        self.received += len(raw_data)  # across every file of the body
        if self.received > self.limit:
            raise _too_large(self.limit)
        self.buffer.write(raw_data)

    def file_complete(self, file_size: int) -> InMemoryUploadedFile:
        self.buffer.seek(0)
        return InMemoryUploadedFile(
            file=self.buffer,
            field_name=self.field_name,
            name=self.file_name,
            content_type=self.content_type,
            size=file_size,
            charset=self.charset,
            content_type_extra=self.content_type_extra,
        )


class BoundedMultiPartParser(BaseParser):
    """multipart/form-data whose files may total at most the view's `upload_max_bytes(request)`
    (API_MAX_REQUEST_BYTES for a view that names none): refused with a 413 by the Content-Length
    before anything is read, and by BoundedUploadHandler while reading. DRF's MultiPartParser
    would use Django's handlers, which spool any size to disk before a view can judge it."""

    media_type = "multipart/form-data"

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> DataAndFiles[Any, Any]:
        parser_context = parser_context or {}
        request = parser_context["request"]
        view = parser_context.get("view")
        limiter = getattr(view, "upload_max_bytes", None)
        limit: int = limiter(request) if limiter is not None else settings.API_MAX_REQUEST_BYTES
        allowance = limit + (settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0) + _MULTIPART_FRAMING_BYTES
        if _declared_length(parser_context) > allowance:
            raise _too_large(limit)
        meta = request.META.copy()
        meta["CONTENT_TYPE"] = media_type
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            data, files = DjangoMultiPartParser(meta, stream, [BoundedUploadHandler(limit)], encoding).parse()
        except RequestDataTooBig as exc:  # the form fields beside the files, over DATA_UPLOAD_MAX_MEMORY_SIZE
            raise ApiError(413, "request_too_large", "the form fields of the request are too large") from exc
        except (MultiPartParserError, SuspiciousOperation, UnicodeDecodeError, ValueError) as exc:
            # A broken body, too many fields or files: the client's fault, a 400.
            raise exceptions.ParseError(f"multipart form parse error - {exc}") from exc
        return DataAndFiles(data, files)
