"""Moving a signed-in person to another host (Zulip's way with realm subdomains).

Sessions are per host: the cookie of `localhost` is not sent to `acme.localhost`. A person who is
signed in on one host gets a one-time token bound to them and to the target host; the target host
consumes it and signs them in there. The token is signed (SECRET_KEY), lives PORTAL_HANDOVER_SECONDS,
and its id is remembered in Redis until it expires, so it is accepted once.

The token travels in the body of a POST (a form on the source host's page, submitted by script or
by its button), never in a URL: a link can't sign anyone in. The target accepts the POST only from
a page of ours (its Origin, or Referer, is the platform host or an organization's host), so another
site can't sign a visitor in as the site's owner with a token of their own (login CSRF). The POST is
exempt from Django's CSRF check, which can't apply: the target host has no cookie of this browser
yet, and the token is the credential.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from allauth.account.authentication import get_authentication_records
from django.conf import settings
from django.core import signing
from django.http import HttpRequest
from django.http.request import split_domain_port
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from apps.accounts.models import User
from apps.tenants.models import Domain, Organization
from cognitionos.redis import redis_client

_SALT = "cognitionos.portal.handover"
_USED_KEY = "portal:handover:used:{}"


class HandoverRefused(Exception):
    """The token is forged, expired, meant for another host, or already used."""


@dataclass(frozen=True)
class Handover:
    user: User
    next_path: str
    authentication_records: list[dict[str, Any]]


def organization_host(organization: Organization) -> str:
    """The host name of an organization's portal (its primary domain)."""
    domain = organization.domains.filter(is_primary=True).values_list("domain", flat=True).first()
    return domain or f"{organization.slug}.{settings.BASE_DOMAIN}"


def _origin(request: HttpRequest, host: str) -> str:
    _host, port = split_domain_port(request.get_host())
    default_port = "443" if request.is_secure() else "80"
    suffix = f":{port}" if port and port != default_port else ""
    return f"{request.scheme}://{host}{suffix}"


@dataclass(frozen=True)
class HandoverForm:
    """What the source page posts: to `action` (the target host's /handover/), the field `token`."""

    action: str
    token: str


def handover_prepare(
    *, request: HttpRequest, user: User, organization: Organization, next_path: str = "/"
) -> HandoverForm:
    """The form that signs `user` in on the organization's host, once, within the lifetime."""
    host = organization_host(organization)
    if not next_path.startswith("/") or next_path.startswith("//"):
        next_path = "/"
    claims = {
        "u": user.pk,
        "h": host,
        "j": secrets.token_urlsafe(16),
        "n": next_path,
        # How the person signed in (password, MFA, SSO...): the new session knows it too, so a
        # check such as "this organization requires MFA" holds on the organization's host.
        "a": [
            record
            for record in (get_authentication_records(request, user) if hasattr(request, "session") else [])
            if isinstance(record, dict) and isinstance(record.get("method"), str)
        ],
    }
    token = signing.dumps(claims, salt=_SALT, compress=True)
    path = reverse("portal-handover", urlconf=settings.ROOT_URLCONF)  # a route of organization hosts only
    return HandoverForm(action=f"{_origin(request, host)}{path}", token=token)


def handover_source_allowed(request: HttpRequest) -> bool:
    """Whether the POST comes from a page of ours: its Origin (or, without one, its Referer) is the
    platform host, an organization's host under it, or an organization's own domain."""
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    parts = urlsplit(source)
    if parts.scheme != request.scheme or not parts.hostname:
        return False
    host = parts.hostname.lower()
    base = settings.BASE_DOMAIN
    return host == base or host.endswith(f".{base}") or Domain.objects.filter(domain=host).exists()


def handover_consume(*, request: HttpRequest, token: str) -> Handover:
    """Check the token against this request's host and mark it used. Raises HandoverRefused."""
    lifetime: int = settings.PORTAL_HANDOVER_SECONDS
    try:
        claims = signing.loads(token, salt=_SALT, max_age=lifetime)
    except signing.SignatureExpired as exc:
        raise HandoverRefused("expired") from exc
    except signing.BadSignature as exc:
        raise HandoverRefused("invalid") from exc
    host, _port = split_domain_port(request.get_host())
    if claims.get("h") != host:
        raise HandoverRefused("another host")
    # Remembered a little longer than the lifetime: a token can't outlive its id's record.
    if not redis_client().set(_USED_KEY.format(claims["j"]), "1", nx=True, ex=lifetime + 5):
        raise HandoverRefused("already used")
    user = User.objects.filter(pk=claims["u"], is_active=True).first()
    if user is None:
        raise HandoverRefused("no such user")
    next_path = str(claims.get("n") or "/")
    if not url_has_allowed_host_and_scheme(next_path, allowed_hosts=None):
        next_path = "/"
    records = [record for record in claims.get("a") or [] if isinstance(record, dict) and "method" in record]
    return Handover(user=user, next_path=next_path, authentication_records=records)
