"""Stripe's webhook endpoint (platform host): verify the signature, apply the event.

Our own view rather than dj-stripe's: the answers Stripe acts on must be exact — 400 for a missing or
bad signature (nothing is written, not even a log row), 200 for a duplicate or an event we don't
use (Stripe stops retrying), 5xx only when applying failed and a retry can help (Stripe retries).
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from apps.billing.stripe_gateway import StripeError, StripeSignatureInvalid, event_verify
from apps.billing.stripe_webhooks import EventMalformed, stripe_event_process

logger = logging.getLogger(__name__)

# Stripe's events are small; a body beyond this is not one.
MAX_EVENT_BYTES = 512 * 1024


@csrf_exempt  # Stripe can't send a CSRF token; the signature is the authentication
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    if len(request.body) > MAX_EVENT_BYTES:
        return JsonResponse({"error": "event too large"}, status=413)
    try:
        event = event_verify(request.body, request.headers.get("Stripe-Signature"))
    except StripeSignatureInvalid as exc:
        logger.warning("stripe webhook refused: %s", exc)
        return JsonResponse({"error": "invalid signature"}, status=400)
    try:
        outcome = stripe_event_process(event=event)
    except EventMalformed as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    except StripeError as exc:
        # Reading the subscription from Stripe failed: nothing was written; Stripe retries later.
        logger.warning("stripe webhook %s deferred: %s", event.get("id"), exc)
        return JsonResponse({"error": "try again later"}, status=503)
    return JsonResponse({"received": True, "outcome": str(outcome) if outcome is not None else "duplicate"})
