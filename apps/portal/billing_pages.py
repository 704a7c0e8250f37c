"""The portal's Plan and billing page (issue 13): the plan and what it gives, this period's usage
against what is included (a chart, from the public daily rollups), the projected overage, the
invoices, and the way to change plan (Stripe Checkout) or payment details (the Stripe billing
portal). The page and its buttons need billing:manage (Owner, Admin, Billing roles)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from apps.billing.models import Plan
from apps.billing.services import PlanChangeInvalid, billing_portal_session_create, checkout_session_create
from apps.billing.stripe_gateway import StripeError
from apps.portal.billing import billing_overview, invoice_rows
from apps.portal.caller import caller_organization, caller_principal
from apps.rbac.decorators import permission_required
from apps.rbac.permissions import Permission

INVOICES_SHOWN = 12
_UNREACHABLE = "Payments can't be reached right now; nothing changed. Try again in a minute."


@permission_required(Permission.BILLING_MANAGE)
@never_cache
def billing(request: HttpRequest) -> HttpResponse:
    organization = caller_organization(request)
    overview = billing_overview(organization=organization)
    return render(
        request,
        "portal/billing/billing.html",
        {
            "organization": organization,
            "overview": overview,
            "invoices": invoice_rows(organization=organization, limit=INVOICES_SHOWN),
        },
    )


def _absolute(request: HttpRequest, url_name: str) -> str:
    return request.build_absolute_uri(reverse(url_name))


@permission_required(Permission.BILLING_MANAGE)
@require_POST
def billing_upgrade(request: HttpRequest) -> HttpResponse:
    """To Stripe Checkout for the plan chosen (a plan the page offers as an upgrade)."""
    organization = caller_organization(request)
    code = request.POST.get("plan", "")[:40]
    offered = {offer.plan.code: offer for offer in billing_overview(organization=organization).upgrades}
    if code not in offered:
        messages.error(request, "That plan can't be chosen here: pick one of the upgrades under Plans.")
        return _refused(request)
    plan = Plan.objects.get(pk=offered[code].plan.pk)
    try:
        url = checkout_session_create(
            organization=organization,
            plan=plan,
            success_url=_absolute(request, "portal-billing") + "?checkout=done",
            cancel_url=_absolute(request, "portal-billing") + "?checkout=canceled",
            actor=caller_principal(request),
        )
    except PlanChangeInvalid as invalid:
        messages.error(request, f"Not started: {invalid}.")
        return _refused(request)
    except StripeError:
        messages.error(request, _UNREACHABLE)
        return redirect("portal-billing")
    return redirect(url)


def _refused(request: HttpRequest) -> HttpResponse:
    """The page again, with the message, as a 400 (nothing was started)."""
    response = billing(request)
    response.status_code = 400
    return response


@permission_required(Permission.BILLING_MANAGE)
@require_POST
def billing_manage(request: HttpRequest) -> HttpResponse:
    """To the Stripe billing portal: payment methods, invoices, cancellation."""
    organization = caller_organization(request)
    try:
        url = billing_portal_session_create(
            organization=organization, return_url=_absolute(request, "portal-billing"), actor=caller_principal(request)
        )
    except StripeError:
        messages.error(request, _UNREACHABLE)
        return redirect("portal-billing")
    return redirect(url)


urlpatterns: list[URLPattern] = [
    path("billing/", billing, name="portal-billing"),
    path("billing/upgrade/", billing_upgrade, name="portal-billing-upgrade"),
    path("billing/manage/", billing_manage, name="portal-billing-manage"),
]
