"""A portal page refused by the organization's plan (apps.billing EntitlementRefused, raised by the
service the view called) answers with what the plan lacks and a link to the plan page, with the
refusal's status (402 or 403), instead of a server error. One place for every page: the services
refuse, the views don't need to catch it one by one. API views answer it themselves (DRF's
exception handler renders any Refusal in the API's error shape) before it gets here."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.billing.selectors import EntitlementRefused


class EntitlementRefusedMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, EntitlementRefused):
            return None
        # An HTMX request swaps the fragment into the page it came from; a full page otherwise.
        fragment = bool(request.headers.get("HX-Request"))
        template = "portal/plan_refused_fragment.html" if fragment else "portal/plan_refused.html"
        return render(request, template, {"refusal": exception}, status=exception.http_status)
