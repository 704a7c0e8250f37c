"""The portal's webhooks pages (issue 12): endpoints (list, add, change, delete), their signing
secret (shown once when made or rotated), a test event, and each endpoint's delivery log with a
delivery's detail and retry. Thin: apps.webhooks' services and selectors do the work, as for the
REST API (apps.webhooks.api); these pages parse, check the role, call one of them and render.

A secret is in the one answer to the POST that made it: never stored in the session, never put
through a redirect, never in a page afterwards (only its last characters)."""

from __future__ import annotations

import json
import urllib.parse
import uuid
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, path
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.portal.caller import caller_organization, caller_principal
from apps.portal.paging import keyset_page_by_time
from apps.portal.webhook_forms import EndpointForm, RotateForm
from apps.rbac.decorators import permission_required
from apps.rbac.permissions import Permission
from apps.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from apps.webhooks.selectors import (
    webhook_delivery_get,
    webhook_delivery_list,
    webhook_endpoint_get,
    webhook_endpoint_list,
)
from apps.webhooks.services import (
    WebhookConflict,
    WebhookInvalid,
    webhook_delivery_retry,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_test,
    webhook_endpoint_update,
    webhook_secret_rotate,
)
from apps.webhooks.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER
from apps.work.models import WorkStatus

MANAGE = Permission.WEBHOOKS_MANAGE
ENDPOINTS_PAGE_SIZE = 50
DELIVERIES_PAGE_SIZE = 25
# A payload is up to 4 MB (apps.webhooks.services.MAX_PAYLOAD_BYTES); a page shows its beginning.
PAYLOAD_SHOWN_CHARS = 20_000
# While a delivery is unfinished its summary asks again this often (HTMX polling), and the log's
# page while one of its deliveries is.
POLL_SECONDS = 1
WAITING_POLL_SECONDS = 5
LOG_POLL_SECONDS = 2
_SENT_TWICE = (
    "This form was already sent, and its secret shown then: nothing was done again. "
    "If you didn't copy the secret, rotate it on the endpoint's page."
)


def _endpoint_or_404(endpoint_id: uuid.UUID) -> WebhookEndpoint:
    try:
        return webhook_endpoint_get(endpoint_id=endpoint_id)
    except WebhookEndpoint.DoesNotExist as missing:  # another organization's endpoint is simply absent
        raise Http404("No such webhook endpoint.") from missing


def _delivery_or_404(delivery_id: uuid.UUID) -> WebhookDelivery:
    try:
        return webhook_delivery_get(delivery_id=delivery_id)
    except WebhookDelivery.DoesNotExist as missing:
        raise Http404("No such delivery.") from missing


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _delivery_context(delivery: WebhookDelivery) -> dict[str, Any]:
    """What a delivery's row and summary show, beside the delivery itself."""
    status = delivery.delivery_status
    return {
        "delivery": delivery,
        "status": str(status),
        "unfinished": status in (DeliveryStatus.PENDING, DeliveryStatus.RETRYING),
        # A failed delivery is sent again as a new delivery of the same event; a waiting retry is
        # moved to now. One in flight can't be retried (the service refuses it too).
        "retryable": status == DeliveryStatus.FAILED
        or (status == DeliveryStatus.RETRYING and delivery.status == WorkStatus.QUEUED),
        # A retry scheduled for later is asked about less often than an attempt under way.
        "poll_seconds": POLL_SECONDS
        if status == DeliveryStatus.PENDING or delivery.status == WorkStatus.RUNNING
        else WAITING_POLL_SECONDS,
    }


# --- endpoints ---------------------------------------------------------------------------------


def _secret_page(request: HttpRequest, endpoint: WebhookEndpoint, secret: str, *, rotated: bool) -> HttpResponse:
    # The one answer that carries the secret.
    return render(
        request,
        "portal/webhooks/secret.html",
        {"organization": caller_organization(request), "endpoint": endpoint, "secret": secret, "rotated": rotated}
        | _verify_context(endpoint),
    )


def _verify_context(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "signature_header": SIGNATURE_HEADER,
        "event_header": EVENT_HEADER,
        "delivery_header": DELIVERY_HEADER,
        "secret_variable": f"WEBHOOK_SECRET_{endpoint.pk.hex[:8].upper()}",
        "max_attempts": int(settings.WEBHOOK_MAX_ATTEMPTS),
        "timeout_seconds": int(settings.WEBHOOK_TIMEOUT_SECONDS),
    }


@permission_required(MANAGE)
@never_cache
@require_http_methods(["GET", "POST"])
def webhooks(request: HttpRequest) -> HttpResponse:
    """The organization's endpoints, and the form for a new one. A new endpoint's secret is shown in
    the answer to the form only."""
    organization = caller_organization(request)
    form = EndpointForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid() and not form.submission_claim(organization_id=organization.pk):
            form.add_error(None, _SENT_TWICE)
        elif form.is_valid():
            try:
                endpoint, secret = webhook_endpoint_create(
                    organization=organization,
                    actor=caller_principal(request),
                    url=form.cleaned_data["url"],
                    events=form.cleaned_data["events"],
                    description=form.cleaned_data["description"],
                )
            except WebhookInvalid as refused:
                form.submission_release(organization_id=organization.pk)
                form.refusal_add(refused)
            else:
                return _secret_page(request, endpoint, secret, rotated=False)
        status = 400
    return render(
        request,
        "portal/webhooks/list.html",
        {
            "organization": organization,
            "page": keyset_page_by_time(webhook_endpoint_list(), request=request, keep={}, size=ENDPOINTS_PAGE_SIZE),
            "form": form,
        },
        status=status,
    )


@permission_required(MANAGE)
@never_cache
@require_GET
def webhook_endpoint(request: HttpRequest, endpoint_id: uuid.UUID) -> HttpResponse:
    """One endpoint: its settings, secret (last characters only) and rotation, a test event, how to
    verify signatures, and its delivery log (newest first, filtered by status, paged by keyset)."""
    endpoint = _endpoint_or_404(endpoint_id)
    previous_expires = endpoint.previous_secret_expires_at
    return render(
        request,
        "portal/webhooks/endpoint.html",
        {
            "organization": caller_organization(request),
            "endpoint": endpoint,
            "status_choices": DeliveryStatus.values,
            "rotate_form": RotateForm(),
            "previous_secret_expires_at": previous_expires
            if previous_expires is not None and previous_expires > timezone.now()
            else None,
        }
        | _verify_context(endpoint)
        | _log_context(request, endpoint),
    )


def _log_context(request: HttpRequest, endpoint: WebhookEndpoint) -> dict[str, Any]:
    """One page of an endpoint's delivery log, from the request's status filter and cursor."""
    status_filter = request.GET.get("status", "")
    if status_filter not in DeliveryStatus.values:
        status_filter = ""
    keep = {"status": status_filter} if status_filter else {}
    # The payload is not read for the list (up to 4 MB each).
    deliveries = webhook_delivery_list(endpoint_id=endpoint.pk, status=status_filter or None).defer("payload")
    page = keyset_page_by_time(deliveries, request=request, keep=keep, size=DELIVERIES_PAGE_SIZE)
    rows = [_delivery_context(delivery) for delivery in page.items]
    # The same page asked for again, by the log's live fragment.
    shown = {name: request.GET[name] for name in ("before", "after") if name in request.GET} | keep
    return {
        "endpoint": endpoint,
        "page": page,
        "rows": rows,
        "status_filter": status_filter,
        "log_unfinished": any(row["unfinished"] for row in rows),
        "log_query": urllib.parse.urlencode(shown),
        "log_poll_seconds": LOG_POLL_SECONDS,
    }


@permission_required(MANAGE)
@never_cache
@require_GET
def webhook_endpoint_log_live(request: HttpRequest, endpoint_id: uuid.UUID) -> HttpResponse:
    """The rows of a page of the delivery log, which the page asks for again every LOG_POLL_SECONDS
    while one of them is unfinished (one query for the page, not one per row), and no more after."""
    endpoint = _endpoint_or_404(endpoint_id)
    return render(request, "portal/webhooks/_delivery_rows.html", _log_context(request, endpoint))


@permission_required(MANAGE)
@never_cache
@require_http_methods(["GET", "POST"])
def webhook_endpoint_edit(request: HttpRequest, endpoint_id: uuid.UUID) -> HttpResponse:
    endpoint = _endpoint_or_404(endpoint_id)
    initial = {
        "url": endpoint.url,
        "description": endpoint.description,
        "events": endpoint.events,
        "is_active": endpoint.is_active,
    }
    form = EndpointForm(request.POST or None, initial=initial, editing=True)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                webhook_endpoint_update(
                    organization=caller_organization(request),
                    actor=caller_principal(request),
                    endpoint_id=endpoint.pk,
                    url=form.cleaned_data["url"],
                    events=form.cleaned_data["events"],
                    description=form.cleaned_data["description"],
                    is_active=form.cleaned_data["is_active"],
                )
            except WebhookInvalid as refused:
                form.refusal_add(refused)
            except WebhookEndpoint.DoesNotExist as gone:  # deleted meanwhile
                raise Http404("No such webhook endpoint.") from gone
            else:
                messages.success(request, "Saved the endpoint's settings.")
                return redirect("portal-webhook", endpoint_id=endpoint.pk)
        status = 400
    return render(
        request,
        "portal/webhooks/edit.html",
        {"organization": caller_organization(request), "endpoint": endpoint, "form": form},
        status=status,
    )


@permission_required(MANAGE)
@never_cache
@require_http_methods(["GET", "POST"])
def webhook_endpoint_remove(request: HttpRequest, endpoint_id: uuid.UUID) -> HttpResponse:
    """A confirmation page; its button deletes the endpoint and its delivery log."""
    endpoint = _endpoint_or_404(endpoint_id)
    if request.method == "POST":
        try:
            webhook_endpoint_delete(
                organization=caller_organization(request), actor=caller_principal(request), endpoint_id=endpoint.pk
            )
        except WebhookEndpoint.DoesNotExist as gone:
            raise Http404("No such webhook endpoint.") from gone
        messages.success(request, f"Deleted the endpoint {endpoint.url}: it receives no more events.")
        return redirect("portal-webhooks")
    return render(
        request,
        "portal/webhooks/delete.html",
        {"organization": caller_organization(request), "endpoint": endpoint},
    )


@permission_required({"POST": MANAGE})
@never_cache
@require_POST
def webhook_endpoint_rotate(request: HttpRequest, endpoint_id: uuid.UUID) -> HttpResponse:
    """A new secret, in this answer only; the old one signs too for the grace period chosen."""
    organization = caller_organization(request)
    endpoint = _endpoint_or_404(endpoint_id)
    form = RotateForm(request.POST)
    if form.is_valid() and not form.submission_claim(organization_id=organization.pk):
        form.add_error(None, _SENT_TWICE)
    elif form.is_valid():
        try:
            endpoint, secret = webhook_secret_rotate(
                organization=organization,
                actor=caller_principal(request),
                endpoint_id=endpoint.pk,
                grace_s=form.cleaned_data["grace_period_seconds"],
            )
        except WebhookInvalid as refused:
            form.submission_release(organization_id=organization.pk)
            form.refusal_add(refused)
        except WebhookEndpoint.DoesNotExist as gone:
            raise Http404("No such webhook endpoint.") from gone
        else:
            return _secret_page(request, endpoint, secret, rotated=True)
    return render(
        request,
        "portal/webhooks/rotate_refused.html",
        {"organization": organization, "endpoint": endpoint, "rotate_form": form},
        status=400,
    )


@permission_required({"POST": MANAGE})
@never_cache
@require_POST
def webhook_endpoint_send_test(request: HttpRequest, endpoint_id: uuid.UUID) -> HttpResponse:
    """Send a `webhook.test` event. From the page (HTMX): the delivery's summary, which follows its
    outcome live; without script, the delivery's page."""
    endpoint = _endpoint_or_404(endpoint_id)
    try:
        delivery = webhook_endpoint_test(
            organization=caller_organization(request), actor=caller_principal(request), endpoint_id=endpoint.pk
        )
    except WebhookConflict as refused:
        if _is_htmx(request):
            return render(request, "portal/webhooks/_test_result.html", {"error": str(refused)})
        messages.error(request, f"No test event was sent: {refused}.")
        return redirect("portal-webhook", endpoint_id=endpoint.pk)
    except WebhookEndpoint.DoesNotExist as gone:
        raise Http404("No such webhook endpoint.") from gone
    if _is_htmx(request):
        return render(request, "portal/webhooks/_test_result.html", _delivery_context(delivery))
    return redirect("portal-webhook-delivery", delivery_id=delivery.pk)


# --- deliveries --------------------------------------------------------------------------------


def _payload_text(delivery: WebhookDelivery) -> tuple[str, bool]:
    """The payload as indented JSON, cut at PAYLOAD_SHOWN_CHARS; and whether it was cut."""
    text = json.dumps(delivery.payload, cls=DjangoJSONEncoder, indent=2, ensure_ascii=False)
    return text[:PAYLOAD_SHOWN_CHARS], len(text) > PAYLOAD_SHOWN_CHARS


@permission_required(MANAGE)
@never_cache
@require_GET
def webhook_delivery(request: HttpRequest, delivery_id: uuid.UUID) -> HttpResponse:
    """One delivery: its status (live while unfinished), attempts, the receiver's last answer and
    the payload sent (its content only when the organization's content policy kept it)."""
    delivery = _delivery_or_404(delivery_id)
    payload, payload_cut = _payload_text(delivery)
    return render(
        request,
        "portal/webhooks/delivery.html",
        {
            "organization": caller_organization(request),
            "endpoint": delivery.endpoint,
            "payload": payload,
            "payload_cut": payload_cut,
            "payload_shown_chars": PAYLOAD_SHOWN_CHARS,
        }
        | _delivery_context(delivery),
    )


@permission_required(MANAGE)
@never_cache
@require_GET
def webhook_delivery_live(request: HttpRequest, delivery_id: uuid.UUID) -> HttpResponse:
    """A delivery's summary, which the page asks for again every POLL_SECONDS while the delivery is
    unfinished, and no more once it ends."""
    delivery = _delivery_or_404(delivery_id)
    return render(request, "portal/webhooks/_delivery_summary.html", _delivery_context(delivery))


@permission_required({"POST": MANAGE})
@never_cache
@require_POST
def webhook_delivery_send_again(request: HttpRequest, delivery_id: uuid.UUID) -> HttpResponse:
    """Retry a delivery now: a failed one as a new delivery of the same event, which this leads to."""
    delivery = _delivery_or_404(delivery_id)
    try:
        sent = webhook_delivery_retry(
            organization=caller_organization(request), actor=caller_principal(request), delivery_id=delivery.pk
        )
    except WebhookConflict as refused:
        messages.error(request, f"Not sent again: {refused}.")
        return redirect("portal-webhook-delivery", delivery_id=delivery.pk)
    except WebhookDelivery.DoesNotExist as gone:
        raise Http404("No such delivery.") from gone
    if sent.pk == delivery.pk:
        messages.success(request, "Its next attempt is now.")
    else:
        messages.success(request, "Sent again, as a new delivery of the same event (same event id).")
    return redirect("portal-webhook-delivery", delivery_id=sent.pk)


urlpatterns: list[URLPattern] = [
    path("webhooks/", webhooks, name="portal-webhooks"),
    path("webhooks/<uuid:endpoint_id>/", webhook_endpoint, name="portal-webhook"),
    path(
        "webhooks/<uuid:endpoint_id>/deliveries/live/",
        webhook_endpoint_log_live,
        name="portal-webhook-deliveries-live",
    ),
    path("webhooks/<uuid:endpoint_id>/edit/", webhook_endpoint_edit, name="portal-webhook-edit"),
    path("webhooks/<uuid:endpoint_id>/delete/", webhook_endpoint_remove, name="portal-webhook-delete"),
    path("webhooks/<uuid:endpoint_id>/rotate/", webhook_endpoint_rotate, name="portal-webhook-rotate"),
    path("webhooks/<uuid:endpoint_id>/test/", webhook_endpoint_send_test, name="portal-webhook-test"),
    path("webhooks/deliveries/<uuid:delivery_id>/", webhook_delivery, name="portal-webhook-delivery"),
    path("webhooks/deliveries/<uuid:delivery_id>/live/", webhook_delivery_live, name="portal-webhook-delivery-live"),
    path(
        "webhooks/deliveries/<uuid:delivery_id>/retry/",
        webhook_delivery_send_again,
        name="portal-webhook-delivery-retry",
    ),
]
