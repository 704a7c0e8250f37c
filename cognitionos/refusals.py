"""The one base for a service's refusal of a request, so every edge renders it the same way.

A service raises a subclass (apps.llm.refusals.LlmRefusal, ...) carrying what an HTTP edge needs;
the REST API's exception handler (apps.api.errors) turns any of them into the API's error shape, so
views don't catch and translate refusals one by one. Other edges (the OpenAI- and Anthropic-
compatible gateway, workers) read the same fields.
"""

from __future__ import annotations


class Refusal(Exception):
    """Refused, for a reason the caller can act on.

    - `http_status`: the status an HTTP edge answers with (400, 402, 403, 404, 409, 429, 502, 503...);
    - `code`: stable and machine-readable; the exception's text is the message, for people;
    - `param`: the request field at fault, if one is;
    - `retry_after_s`: when known, how long to wait before the same request may succeed;
    - `details`: more for the caller, as JSON (every problem found, not only the first).
    """

    http_status: int = 400
    code: str = "refused"
    param: str | None = None
    retry_after_s: int | None = None
    details: object = None

    def request_message(self) -> str:
        """The message an edge answers with: the exception's text, unless the refusal words it
        for the request (a definition's problem located in the request's field)."""
        return str(self)
