"""The portal's middleware: sign-out everywhere (SignedOutMiddleware), an organization's
"require MFA for all members" (OrganizationMfaMiddleware; allauth has no such setting: PITFALLS),
and Django's messages made on first use (MessagesOnUseMiddleware).

Sign-out. Sessions are per host (a handover makes one on each organization's host the person
enters), so signing out on one host used to leave the others signed in. Now a sign-out (Django's
user_logged_out, whichever host and however it is made) records the moment in Redis for the person,
and every session made before that moment is ended on its next request, on every host and in every
browser. Each session keeps when it was signed in (apps.portal.receivers). One Redis read per
signed-in request; nothing to find or delete up front, and a session whose key changed since (e.g.
by a password change) is caught all the same. The record lives as long as a session cookie may.

MFA.

On the host of an organization that requires a second factor, a signed-in member
- without an authenticator (TOTP or security key) is sent to set one up;
- with one, but whose session was not authenticated with it (signed in before the requirement, or
  handed over from a session that didn't use it: apps.portal.handover carries allauth's records),
  is asked for it again (allauth's MFA reauthentication, which records it in the session).
Under /api/ and /v1/ the same session gets 403 `mfa_required` in the API's JSON error shape.

Not affected:
- allauth's own pages (/accounts/: sign-in, sign-out, MFA set-up, reauthentication), the handover,
  the organization switcher and static files, so the way out and the way through stay open;
- people who are not members (the pages tell them so);
- API keys. A key is a program's credential, not a sign-in: it is created in the portal by a member
  (who, in such an organization, passed the second factor to get there), carries only the scopes
  it was given, expires and is revoked without anyone's password. A second factor has nothing to
  ask of a program; requiring one would only push people to share long-lived sessions instead.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

from allauth.account.authentication import get_authentication_records
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import AnonymousUser
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage import default_storage
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import reverse
from django.utils.functional import SimpleLazyObject, empty

from apps.accounts.principals import Principal
from apps.accounts.selectors import user_has_mfa
from apps.rbac.decorators import member_permissions
from cognitionos.redis import redis_client

SIGNED_IN_AT_SESSION_KEY = "portal.signed_in_at"
_SIGNED_OUT_KEY = "portal:signed-out:{}"


def signed_out_record(*, user_id: int, at: float) -> None:
    """Every session of the person signed in before `at` ends on its next request."""
    redis_client().set(_SIGNED_OUT_KEY.format(user_id), repr(at), ex=settings.SESSION_COOKIE_AGE)


class MessagesOnUseMiddleware(MessageMiddleware):
    """Django's messages, with the request's storage made when something first uses it (a page
    adding or showing a message). API calls never do, and making it for each of them (a cookie
    signer and a session reader) was the costliest middleware step of a cached gateway answer:
    4% of its CPU in a py-spy profile. A storage never used has nothing to store."""

    def process_request(self, request: HttpRequest) -> None:
        request._messages = SimpleLazyObject(lambda: default_storage(request))  # type: ignore[attr-defined]

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        storage = getattr(request, "_messages", None)
        if isinstance(storage, SimpleLazyObject) and storage._wrapped is empty:  # type: ignore[attr-defined]
            return response
        return super().process_response(request, response)


class SignedOutMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and hasattr(request, "session"):
            signed_out = redis_client().get(_SIGNED_OUT_KEY.format(user.pk))
            if signed_out is not None:
                signed_in = request.session.get(SIGNED_IN_AT_SESSION_KEY)
                if not isinstance(signed_in, (int, float)) or signed_in < float(signed_out):
                    # Not django's logout(): its signal would record a sign-out again, now, and end
                    # the sessions made since the real one.
                    request.session.flush()
                    request.user = AnonymousUser()
        return self.get_response(request)


_OPEN_PREFIXES = ("/accounts/", "/static/", "/handover/", "/enter/", "/favicon.ico")
_API_PREFIXES = ("/api/", "/v1/")


def session_used_mfa(request: HttpRequest) -> bool:
    """Whether this session's sign-in (or a later reauthentication) used a second factor."""
    return any(record.get("method") == "mfa" for record in get_authentication_records(request, request.user))


class OrganizationMfaMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self._refusal(request) or self.get_response(request)

    @staticmethod
    def _applies(request: HttpRequest) -> bool:
        """A signed-in member, in a session, on the host of an organization that requires MFA."""
        tenant = getattr(request, "tenant", None)
        if tenant is None or tenant.is_public or not tenant.mfa_required:
            return False
        principal = getattr(request, "principal", None)
        if isinstance(principal, Principal) and principal.kind == "api_key":
            return False
        if not request.user.is_authenticated or request.path_info.startswith(_OPEN_PREFIXES):
            return False
        return bool(member_permissions(request))

    def _refusal(self, request: HttpRequest) -> HttpResponse | None:
        if not self._applies(request):
            return None
        # Asked each time (one indexed query, only in organizations that require MFA): a factor
        # removed mid-session stops counting at once.
        user_id = request.user.pk
        assert user_id is not None  # signed in (checked in _applies)
        has_factor = user_has_mfa(user_id=user_id)
        if has_factor and session_used_mfa(request):
            return None
        if request.path_info.startswith(_API_PREFIXES):
            message = (
                "this organization requires two-factor authentication: sign in with your second factor in the portal"
                if has_factor
                else "this organization requires two-factor authentication: set up a second factor in the portal"
            )
            return JsonResponse(
                {"error": {"message": message, "type": "permission_error", "param": None, "code": "mfa_required"}},
                status=403,
            )
        tenant = request.tenant  # type: ignore[attr-defined]
        if has_factor:
            return _redirect(request, f"{reverse('mfa_reauthenticate')}?{urlencode({'next': _next_path(request)})}")
        messages.warning(
            request, f"{tenant.name} requires two-factor authentication. Set up an authenticator app to continue."
        )
        return _redirect(request, reverse("mfa_activate_totp"))


def _next_path(request: HttpRequest) -> str:
    # An HTMX request is for a fragment: come back to the page it was made from, not the fragment.
    current = request.headers.get("HX-Current-URL", "")
    if request.headers.get("HX-Request") == "true" and current:
        parts = urlsplit(current)
        if parts.netloc == request.get_host():
            return parts.path + (f"?{parts.query}" if parts.query else "")
    return request.get_full_path()


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    if request.headers.get("HX-Request") == "true":
        # A 302 would be followed by htmx and the whole page swapped into a fragment's place.
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return HttpResponseRedirect(url)
