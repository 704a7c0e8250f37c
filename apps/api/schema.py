"""How the OpenAPI schema describes the API: authentication, and the error answers of every operation.

Errors are declared once, here, rather than per view: `ApiAutoSchema` adds to each operation the
error statuses it can answer (from the operation's shape: a path parameter can be unknown, a body
can be too large, an idempotent create can conflict), each in the one error shape of apps.api.errors.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers


class ApiKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "apps.api.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "An API key: `Authorization: Bearer cos_...`"}


class MemberSessionScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "apps.api.authentication.MemberSessionAuthentication"
    name = "MemberSession"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": "A member's portal session on the organization's host (with the CSRF token for writes)",
        }


class ErrorDetailOutput(serializers.Serializer[Any]):
    message = serializers.CharField(help_text="For people")
    type = serializers.CharField(help_text="The class of error, as in OpenAI's API (`invalid_request_error`, ...)")
    code = serializers.CharField(help_text="Machine-readable and stable (`invalid_request`, `not_found`, ...)")
    param = serializers.CharField(allow_null=True, help_text="The field at fault (`steps.1.prompt`), if any")
    details = serializers.JSONField(required=False, help_text="Every invalid field, for validation errors")


class ErrorOutput(serializers.Serializer[Any]):
    error = ErrorDetailOutput()


_ALWAYS = {
    400: "The request is invalid: `code` says why and `param` names the field",
    401: "No API key, or an unknown, malformed or revoked one",
    403: "Not allowed: a member's session failed its CSRF check, or the organization is suspended",
    429: "Too many requests (a rate limit, or the cap on open streams): retry after `Retry-After` seconds",
}
_NOT_FOUND = "No such object in this organization, or a stale pagination cursor"
_WITH_BODY = {
    413: "The body is larger than the API accepts",
    415: "The body is not `application/json`",
}
_IDEMPOTENT = {
    409: "A request with this Idempotency-Key is still being processed: retry after `Retry-After` seconds",
    422: "This Idempotency-Key was already used with a different request",
}
_IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="Retrying with the same key returns the first answer instead of creating twice (kept a day)",
)


class ApiAutoSchema(AutoSchema):
    def _handler_is_idempotent(self) -> bool:
        handler = getattr(self.view, self.method.lower(), None)
        return bool(getattr(handler, "idempotent", False))

    def get_override_parameters(self) -> list[Any]:
        parameters = list(super().get_override_parameters())
        if self._handler_is_idempotent():
            parameters.append(_IDEMPOTENCY_KEY)
        return parameters

    def _error_statuses(self) -> dict[int, str]:
        statuses = dict(_ALWAYS)
        paginated = self._is_list_view() and self._get_paginator() is not None  # type: ignore[no-untyped-call]
        if "{" in self.path or paginated:  # an unknown id, or a stale cursor
            statuses[404] = _NOT_FOUND
        idempotent = self._handler_is_idempotent()
        # A body is parsed (and may be refused) where the operation takes one, and by every
        # idempotent create, which fingerprints whatever body came.
        if idempotent or (self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None):
            statuses.update(_WITH_BODY)
        if idempotent:
            statuses.update(_IDEMPOTENT)
        return statuses

    def _error_response(self, status: str, description: str) -> dict[str, Any]:
        response = OpenApiResponse(ErrorOutput, description=description)
        shaped: dict[str, Any] = self._get_response_for_code(response, status)  # type: ignore[no-untyped-call]
        return shaped

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for code, description in sorted(self._error_statuses().items()):
            responses.setdefault(str(code), self._error_response(str(code), description))
        for status, declared in responses.items():
            # A view that names an error of its own (`409: "the job already finished"`) gets the shape too.
            if status.startswith("4") and "content" not in declared:
                responses[status] = self._error_response(status, declared.get("description", ""))
        return responses
