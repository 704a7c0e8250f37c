"""The portal's pages: thin — check who is asking, call a selector or the handover, render."""

from __future__ import annotations

import urllib.parse

from allauth.account.forms import LoginForm
from allauth.account.internal.flows.login import record_authentication
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AnonymousUser
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.accounts.mail import mailbox_messages
from apps.accounts.models import User
from apps.apikeys.models import ApiKey
from apps.apikeys.selectors import apikey_get, apikey_list
from apps.apikeys.services import ApiKeyInvalid, ApiKeyRefused, apikey_create, apikey_revoke
from apps.audit.filters import AuditEventFilter
from apps.audit.models import AuditEvent
from apps.portal.audit_pages import audit_details
from apps.portal.caller import caller_organization, caller_principal, caller_user
from apps.portal.context_processors import platform_origin
from apps.portal.handover import HandoverRefused, handover_consume, handover_prepare, handover_source_allowed
from apps.portal.key_forms import ApiKeyCreateForm
from apps.portal.paging import keyset_page
from apps.portal.selectors import portal_membership, portal_memberships
from apps.rbac.decorators import member_may, member_permissions, permission_required
from apps.rbac.permissions import Permission
from apps.tenants.errors import ProvisioningError
from apps.tenants.models import Organization
from apps.tenants.services import slug_validate

# The session made by a handover is an ordinary Django session on the organization's host.
_SESSION_BACKEND = "django.contrib.auth.backends.ModelBackend"


def home(request: HttpRequest) -> HttpResponse:
    """An organization's portal home: where things are, and the next step for a new organization.
    Signed out, the organization's own sign-in page."""
    organization = caller_organization(request)
    if not request.user.is_authenticated:
        form = LoginForm(request=request)
        # The passkey button as allauth's own sign-in page offers it (this page is ours, so
        # allauth's entrance context, which switches it on there, isn't applied here).
        return render(
            request,
            "portal/organization_signin.html",
            {
                "organization": organization,
                "form": form,
                "passkey_login_enabled": settings.MFA_PASSKEY_LOGIN_ENABLED,
                # Where a passkey sign-in lands: this organization's home.
                "redirect_field": format_html('<input type="hidden" name="next" value="{}">', "/"),
            },
        )
    membership = portal_membership(user=caller_user(request), organization=organization)
    # An operator with a support grant holds permissions here without a membership.
    support_access = membership is None and bool(member_permissions(request))
    if membership is None and not support_access:
        return render(request, "portal/not_member.html", {"organization": organization}, status=403)
    return render(
        request,
        "portal/home.html",
        {
            "organization": organization,
            "membership": membership,
            "support_access": support_access,
            "base_domain": settings.BASE_DOMAIN,
            "may_manage_keys": member_may(request, Permission.KEYS_MANAGE),
        },
    )


def platform_home(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/platform_home.html", {"base_domain": settings.BASE_DOMAIN})


@login_required
@never_cache
def enter(request: HttpRequest) -> HttpResponse:
    """Where a sign-in lands: the organization to work in, on its own host."""
    organization = caller_organization(request)
    user = caller_user(request)
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
    user = caller_user(request)
    membership = next((m for m in portal_memberships(user=user) if m.organization.slug == slug), None)
    if membership is None:
        raise Http404("No such organization among yours.")
    if membership.organization.pk == caller_organization(request).pk:
        return redirect("portal-home")
    return _hand_over(request, user, membership.organization)


def _hand_over(request: HttpRequest, user: User, organization: Organization) -> HttpResponse:
    # A page that posts the token to the organization's host (by script, or its button without):
    # the token never sits in a URL (apps.portal.handover).
    form = handover_prepare(request=request, user=user, organization=organization)
    if caller_organization(request).is_public:
        # From the platform host the session moves rather than copies (as Zulip's root domain does):
        # signing out in the organization then leaves no session behind on the platform host.
        # Between organizations each host keeps its own, for the switcher.
        # Not logout(): its signal would sign the person out on every host (apps.portal.middleware).
        request.session.flush()
        request.user = AnonymousUser()
        # Notices queued here ("signed in as ...") would greet the person on their next visit to
        # the platform host, signed out by then: they are dropped with the session.
        for _notice in messages.get_messages(request):
            pass
    response = render(request, "portal/handover_post.html", {"form": form, "organization": organization})
    response["Referrer-Policy"] = "origin"  # the target checks where the POST comes from
    return response


@csrf_exempt  # the token is the credential; the target host has no CSRF cookie yet (apps.portal.handover)
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def handover(request: HttpRequest) -> HttpResponse:
    """Consume a handover token posted from a page of ours and sign its person in on this host. A
    GET (a link, wherever it came from) signs nobody in."""
    if request.method != "POST":
        return render(request, "portal/handover_refused.html", {"reason": "not a form"}, status=405)
    if not handover_source_allowed(request):
        return render(request, "portal/handover_refused.html", {"reason": "another site"}, status=403)
    try:
        accepted = handover_consume(request=request, token=request.POST.get("token", ""))
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


_FORM_SENT_TWICE = (
    "This form was already sent, and its key created (and shown) then: no second key was made. "
    "If you didn't copy the key, revoke it below and create another."
)


@permission_required(Permission.KEYS_MANAGE)
@never_cache
def keys(request: HttpRequest) -> HttpResponse:
    """The organization's API keys, and a form for a new one; a new key's secret is in this one
    answer only (never stored, never redirected through the session)."""
    organization = caller_organization(request)
    form = ApiKeyCreateForm(request.POST or None, held=member_permissions(request))
    issued = None
    status = 200
    if request.method == "POST":
        if form.is_valid() and not form.submission_claim(organization_id=organization.pk):
            form.add_error(None, _FORM_SENT_TWICE)
        elif form.is_valid():
            try:
                issued = apikey_create(
                    organization=organization,
                    actor=caller_principal(request),
                    name=form.cleaned_data["name"],
                    scopes=form.cleaned_data["scopes"],
                    expires_at=form.expires_at(),
                    user=caller_user(request) if form.cleaned_data["bind_to_me"] else None,
                )
            except (ApiKeyInvalid, ApiKeyRefused) as refused:
                form.submission_release(organization_id=organization.pk)
                form.add_error("scopes" if getattr(refused, "param", "scopes") == "scopes" else None, str(refused))
        if issued is None:
            status = 400
        else:
            form = ApiKeyCreateForm(held=member_permissions(request))
    return render(
        request,
        "portal/keys.html",
        {
            "organization": organization,
            # Newest first, a page at a time (`before=` toward older keys).
            "keys_page": keyset_page(apikey_list(organization=organization), request=request, descending=True),
            "form": form,
            "issued": issued,
            "now": timezone.now(),
            "api_base_url": f"{platform_origin(request)}/v1",
        },
        status=status,
    )


@permission_required({"POST": Permission.KEYS_MANAGE})
@require_POST
def key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    try:
        api_key = apikey_get(organization=caller_organization(request), key_id=key_id)
    except ApiKey.DoesNotExist as missing:  # another organization's key is simply absent
        raise Http404 from missing
    apikey_revoke(api_key=api_key, actor=caller_principal(request), reason="revoked in the portal")
    messages.success(request, f"Revoked {api_key.name} (cos_{api_key.prefix}_…): it no longer works.")
    return redirect("portal-keys")


AUDIT_PAGE_SIZE = 50

# The filters the page offers (the REST API takes these and more).
_AUDIT_FILTER_LABELS = {
    "action": ("Action", "Exactly this action, e.g. apikey.created"),
    "actor": ("Actor", "An email, or a key's label"),
    "occurred_after": ("From (UTC)", ""),
    "occurred_before": ("Until (UTC)", ""),
}


@permission_required(Permission.AUDIT_READ)
@never_cache
@require_GET
def audit(request: HttpRequest) -> HttpResponse:
    """The audit log, newest first, filtered as the REST API filters it, paged by keyset."""
    filterset = AuditEventFilter(request.GET, queryset=AuditEvent.objects.all())
    form = filterset.form
    for name, (label, help_text) in _AUDIT_FILTER_LABELS.items():
        form.fields[name].label, form.fields[name].help_text = label, help_text
    for name in ("occurred_after", "occurred_before"):
        form.fields[name].widget.input_type = "datetime-local"
    valid = filterset.is_valid()
    filters = {name: str(value) for name, value in request.GET.items() if name in filterset.filters and value and valid}
    # Newest first: `before=` pages toward older events, `after=` back toward newer ones. By id, not
    # by the chain's sequence: events are chained after commit, and one not chained yet shows too.
    page = keyset_page(
        filterset.qs if valid else AuditEvent.objects.none(),
        request=request,
        key="id",
        descending=True,
        keep=filters,
        size=AUDIT_PAGE_SIZE,
    )
    return render(
        request,
        "portal/audit.html",
        {
            "organization": caller_organization(request),
            "filter_form": form,
            "filter_fields": [form[name] for name in _AUDIT_FILTER_LABELS],
            "page": page,
            "rows": [(event, audit_details(event)) for event in page.items],
            "filter_query": urllib.parse.urlencode(filters),
            "filtered": bool(filters),
        },
        status=200 if valid else 400,
    )
