"""The portal's pages: thin — check who is asking, call a selector or the handover, render."""

from __future__ import annotations

from allauth.account.forms import LoginForm
from allauth.account.internal.flows.login import record_authentication
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.accounts.mail import mailbox_messages
from apps.accounts.models import User
from apps.portal.handover import HandoverRefused, handover_consume, handover_url
from apps.portal.selectors import portal_membership, portal_memberships
from apps.tenants.errors import ProvisioningError
from apps.tenants.models import Organization
from apps.tenants.services import slug_validate

# The session made by a handover is an ordinary Django session on the organization's host.
_SESSION_BACKEND = "django.contrib.auth.backends.ModelBackend"


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


def _tenant(request: HttpRequest) -> Organization:
    return request.tenant  # type: ignore[attr-defined,no-any-return]


def home(request: HttpRequest) -> HttpResponse:
    """An organization's portal home: where things are, and the next step for a new organization.
    Signed out, the organization's own sign-in page."""
    organization = _tenant(request)
    if not request.user.is_authenticated:
        form = LoginForm(request=request)
        return render(request, "portal/organization_signin.html", {"organization": organization, "form": form})
    membership = portal_membership(user=_user(request), organization=organization)
    if membership is None:
        return render(request, "portal/not_member.html", {"organization": organization}, status=403)
    return render(
        request,
        "portal/home.html",
        {"organization": organization, "membership": membership, "base_domain": settings.BASE_DOMAIN},
    )


def platform_home(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/platform_home.html", {"base_domain": settings.BASE_DOMAIN})


@login_required
@never_cache
def enter(request: HttpRequest) -> HttpResponse:
    """Where a sign-in lands: the organization to work in, on its own host."""
    organization = _tenant(request)
    user = _user(request)
    if not organization.is_public and portal_membership(user=user, organization=organization) is not None:
        return redirect("portal-home")
    memberships = list(portal_memberships(user=user))
    if len(memberships) == 1:
        return _hand_over(request, user, memberships[0].organization)
    return render(request, "portal/enter.html", {"memberships": memberships})


@login_required
@never_cache
@require_GET
def enter_organization(request: HttpRequest, slug: str) -> HttpResponse:
    """The switcher's link: hand the session over to one of the person's organizations."""
    user = _user(request)
    membership = next((m for m in portal_memberships(user=user) if m.organization.slug == slug), None)
    if membership is None:
        raise Http404("No such organization among yours.")
    if membership.organization.pk == _tenant(request).pk:
        return redirect("portal-home")
    return _hand_over(request, user, membership.organization)


def _hand_over(request: HttpRequest, user: User, organization: Organization) -> HttpResponse:
    url = handover_url(request=request, user=user, organization=organization)
    if _tenant(request).is_public:
        # From the platform host the session moves rather than copies (as Zulip's root domain does):
        # signing out in the organization then leaves no session behind on the platform host.
        # Between organizations each host keeps its own, for the switcher.
        logout(request)
        # Notices queued here ("signed in as ...") would greet the person on their next visit to
        # the platform host, signed out by then: they are dropped with the session.
        for _notice in messages.get_messages(request):
            pass
    return HttpResponseRedirect(url)


@never_cache
@require_GET
def handover(request: HttpRequest) -> HttpResponse:
    """Consume a handover token on this organization's host and sign its person in here."""
    try:
        accepted = handover_consume(request=request, token=request.GET.get("token", ""))
    except HandoverRefused as refused:
        return render(request, "portal/handover_refused.html", {"reason": str(refused)}, status=400)
    login(request, accepted.user, backend=_SESSION_BACKEND)
    for record in accepted.authentication_records:
        # allauth's own record keeping (internal API), so its MFA and reauthentication checks read them.
        record_authentication(request, accepted.user, **record)
    return HttpResponseRedirect(accepted.next_path)


@require_GET
def slug_check(request: HttpRequest) -> HttpResponse:
    """The sign-up form asks (HTMX, as the person types) whether an organization address is free."""
    slug = request.GET.get("organization_slug", "").strip().lower()
    problem: str | None = None
    if slug:
        try:
            slug_validate(slug)
        except ProvisioningError as exc:
            problem = str(exc)
    return render(request, "portal/_slug_check.html", {"slug": slug, "problem": problem})


@never_cache
def dev_mailbox(request: HttpRequest) -> HttpResponse:
    """Development only: the messages the platform would have sent, with their links."""
    if not settings.DEV_MAILBOX:
        raise Http404
    to = request.GET.get("to", "").strip() or None
    return render(request, "portal/dev_mailbox.html", {"messages_sent": mailbox_messages(to=to), "to": to or ""})
