"""`Idempotency-Key` on create endpoints: a retried POST returns the first answer, never a second object."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from apps.api.errors import ApiError
from apps.api.services import idempotency_claim, idempotency_complete, idempotency_release

View = TypeVar("View")
Handler = Callable[..., Response]


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class _FingerprintEncoder(JSONEncoder):
    """request.data as JSON; an uploaded file (a multipart create) by its name and its bytes' hash."""

    def default(self, obj: Any) -> Any:
        if isinstance(obj, UploadedFile):
            digest = hashlib.sha256()
            for chunk in obj.chunks():
                digest.update(chunk)
            obj.seek(0)
            return {"file": obj.name, "sha256": digest.hexdigest()}
        return super().default(obj)


def _fingerprint(request: Request) -> str:
    body = json.dumps(request.data, cls=_FingerprintEncoder, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def idempotent(handler: Handler | None = None, *, redact: tuple[str, ...] = ()) -> Any:
    """Wrap a view's `post`: with an Idempotency-Key, the create and the stored answer commit together.

    `@idempotent(redact=("secret",))` keeps those top-level fields out of the stored answer: a
    secret is shown once, and a replay answers with the field set to null.
    """
    if handler is None:
        return functools.partial(_idempotent, redact=redact)
    return _idempotent(handler, redact=redact)


def _idempotent(handler: Handler, *, redact: tuple[str, ...]) -> Handler:
    @functools.wraps(handler)
    def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return handler(view, request, *args, **kwargs)
        if not 1 <= len(key) <= 255 or not key.isprintable():
            raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 printable characters")
        claim = idempotency_claim(key=key, fingerprint=_fingerprint(request))
        if claim.conflict == "reused":
            raise ApiError(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request; use a new key",
            )
        if claim.conflict == "in_progress":
            raise ApiError(
                409,
                "idempotency_request_in_progress",
                "a request with this Idempotency-Key is still being processed; retry in a moment",
                headers={"Retry-After": "1"},
            )
        if claim.replay is not None:
            return Response(
                claim.replay.response_body, status=claim.replay.response_status, headers={"Idempotent-Replayed": "true"}
            )
        assert claim.record is not None
        try:
            with transaction.atomic():
                response = handler(view, request, *args, **kwargs)
                if response.status_code >= 400:
                    raise _Refused(response)
                body = json.loads(json.dumps(response.data, cls=JSONEncoder))
                if isinstance(body, dict):
                    body.update((name, None) for name in redact if name in body)
                idempotency_complete(record=claim.record, status=response.status_code, body=body)
        except _Refused as refused:
            idempotency_release(record=claim.record)
            return refused.response
        except BaseException:
            idempotency_release(record=claim.record)
            raise
        return response

    wrapper.idempotent = True  # type: ignore[attr-defined]  # the schema documents the header and its refusals
    return wrapper
