"""The SAML side of SSO: allauth's SAML provider configured per organization from its
IdentityProvider row, and the checks we add around python3-saml's own (docs/sso.md).

python3-saml validates the response (strict mode: schema, signature, SHA-1 refused, one assertion,
signed elements that are the ones read, audience, destination, recipient, validity window,
issuer). Around it we add what it leaves to the service provider: a bound on the response's size
before anything parses it, the reason for a refusal in words a person and an audit log can use,
one use per assertion (Redis, until its NotOnOrAfter), and RelayState limited to our own hosts.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from allauth.socialaccount.providers.saml.utils import build_saml_config, prepare_django_request
from django.conf import settings
from django.http import HttpRequest
from django.http.request import split_domain_port
from django.urls import reverse
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.constants import OneLogin_Saml2_Constants
from onelogin.saml2.response import OneLogin_Saml2_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from onelogin.saml2.utils import OneLogin_Saml2_ValidationError

from apps.sso.models import IdentityProvider
from apps.tenants.models import Organization
from cognitionos.redis import redis_client

_VE = OneLogin_Saml2_ValidationError

# Why a response was refused: the code goes to the audit log ("sso.login_refused", metadata
# reason), the status and the sentence to the person. Nothing of the response itself is echoed.
REFUSALS: dict[str, tuple[int, str]] = {
    "too_large": (413, "The sign-in response from your identity provider is larger than we accept."),
    "missing_response": (400, "No sign-in response arrived from your identity provider."),
    "malformed": (400, "The sign-in response from your identity provider could not be read."),
    "unsigned": (400, "The sign-in response is not signed by your identity provider: signed assertions are required."),
    "bad_signature": (
        400,
        "The sign-in response's signature doesn't match your identity provider's certificate. "
        "If the provider changed its certificate, an administrator must update the SSO settings.",
    ),
    "deprecated_algorithm": (
        400,
        "The sign-in response is signed with SHA-1, which is no longer accepted. "
        "An administrator must switch the identity provider to SHA-256.",
    ),
    "expired": (400, "The sign-in response has expired. Please start the sign-in again."),
    "not_yet_valid": (400, "The sign-in response is not valid yet: the identity provider's clock may be wrong."),
    "audience": (400, "The sign-in response was meant for another service, not this organization."),
    "destination": (400, "The sign-in response was addressed to another sign-in endpoint than this organization's."),
    "recipient": (
        400,
        "The sign-in response's subject confirmation is not for this organization's sign-in endpoint (or has expired).",
    ),
    "issuer": (400, "The sign-in response comes from another identity provider than this organization's."),
    "wrapped": (400, "The sign-in response's structure doesn't match what was signed, so it was refused."),
    "replayed": (400, "This sign-in response was used already. Please start the sign-in again."),
    "no_expiry": (400, "The sign-in response has no expiry (NotOnOrAfter), so it can't be accepted once only."),
    "validity_too_long": (400, "The sign-in response stays valid for longer than we accept."),
    "unknown_request": (
        400,
        "This sign-in response doesn't answer a sign-in started in this browser. Please start the sign-in again.",
    ),
    "idp_status": (400, "Your identity provider reports that the sign-in did not succeed."),
    "idp_initiated_disabled": (
        403,
        "This organization accepts only sign-ins started here, not from the identity provider's portal. "
        "Please sign in from this organization's sign-in page.",
    ),
    "no_email": (400, "Your identity provider did not send a usable email address."),
    "domain_not_verified": (
        403,
        "Your email address is not in a domain this organization has verified, so its identity provider "
        "can't sign you in.",
    ),
    "plan_without_sso": (403, "This organization's plan doesn't include single sign-on."),
    "sso_disabled": (403, "Single sign-on is turned off for this organization."),
    "plan_limit_members": (403, "This organization has reached the number of members its plan allows."),
    "user_inactive": (403, "Your account is deactivated."),
    "account_mismatch": (403, "Your identity provider's account is linked to another person here."),
    "invalid": (400, "The sign-in response is not valid."),
    "unavailable": (503, "Single sign-on is unavailable for a moment. Please try again shortly."),
}

_REASON_BY_CODE = {
    _VE.NO_SIGNED_ASSERTION: "unsigned",
    _VE.NO_SIGNED_MESSAGE: "unsigned",
    _VE.NO_SIGNATURE_FOUND: "unsigned",
    _VE.INVALID_SIGNATURE: "bad_signature",
    _VE.DEPRECATED_SIGNATURE_METHOD: "deprecated_algorithm",
    _VE.DEPRECATED_DIGEST_METHOD: "deprecated_algorithm",
    _VE.ASSERTION_EXPIRED: "expired",
    _VE.SESSION_EXPIRED: "expired",
    _VE.RESPONSE_EXPIRED: "expired",
    _VE.ASSERTION_TOO_EARLY: "not_yet_valid",
    _VE.WRONG_AUDIENCE: "audience",
    _VE.WRONG_DESTINATION: "destination",
    _VE.EMPTY_DESTINATION: "destination",
    _VE.WRONG_SUBJECTCONFIRMATION: "recipient",
    _VE.WRONG_ISSUER: "issuer",
    _VE.ISSUER_MULTIPLE_IN_RESPONSE: "issuer",
    _VE.ISSUER_NOT_FOUND_IN_ASSERTION: "issuer",
    # Signature wrapping (XSW): a second assertion, a signature on another element, references
    # that don't point at their parent, duplicated ids or signatures.
    _VE.WRONG_NUMBER_OF_ASSERTIONS: "wrapped",
    _VE.WRONG_SIGNED_ELEMENT: "wrapped",
    _VE.ID_NOT_FOUND_IN_SIGNED_ELEMENT: "wrapped",
    _VE.DUPLICATED_ID_IN_SIGNED_ELEMENTS: "wrapped",
    _VE.INVALID_SIGNED_ELEMENT: "wrapped",
    _VE.DUPLICATED_REFERENCE_IN_SIGNED_ELEMENTS: "wrapped",
    _VE.UNEXPECTED_SIGNED_ELEMENTS: "wrapped",
    _VE.WRONG_NUMBER_OF_SIGNATURES_IN_RESPONSE: "wrapped",
    _VE.WRONG_NUMBER_OF_SIGNATURES_IN_ASSERTION: "wrapped",
    _VE.WRONG_NUMBER_OF_SIGNATURES: "wrapped",
    _VE.INVALID_XML_FORMAT: "malformed",
    _VE.UNSUPPORTED_SAML_VERSION: "malformed",
    _VE.MISSING_ID: "malformed",
    _VE.MISSING_STATUS: "idp_status",
    _VE.MISSING_STATUS_CODE: "idp_status",
    _VE.STATUS_CODE_IS_NOT_SUCCESS: "idp_status",
    _VE.WRONG_INRESPONSETO: "unknown_request",
}

# The NameID (our SocialAccount.uid) is kept in a column of this length.
_UID_MAX_LENGTH = 191

# Where IdPs put the email address, beyond allauth's defaults: Okta and Google ("email", as the
# admin names it), Azure AD / Entra ID (the emailaddress claim), LDAP-style "mail".
_EMAIL_ATTRIBUTES = [
    "email",
    "Email",
    "mail",
    "urn:oid:0.9.2342.19200300.100.1.3",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
]


class SamlRefused(Exception):
    """A SAML response (or the attempt to use SSO) that is refused; `reason` is a REFUSALS key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in REFUSALS, reason
        super().__init__(reason)
        self.reason = reason
        # For the audit log only (python3-saml's own words, bounded): never shown to the person.
        self.detail = detail[:300]

    @property
    def status(self) -> int:
        return REFUSALS[self.reason][0]

    @property
    def message(self) -> str:
        return REFUSALS[self.reason][1]


def provider_sub_id(organization: Organization) -> str:
    """allauth's provider id of the organization's SAML app: SocialAccount.provider, state keys."""
    return f"saml:{organization.slug}"


def saml_app_settings(*, idp: IdentityProvider) -> dict[str, Any]:
    """allauth's SocialApp.settings for the organization's IdP (read by build_saml_config)."""
    certificates = list(idp.certificates)
    return {
        "idp": {
            "entity_id": idp.entity_id,
            "sso_url": idp.sso_url,
            # One certificate here (python3-saml wants one); all of them in saml_config below.
            "x509cert": certificates[0] if certificates else "",
        },
        "attribute_mapping": {
            "uid": ["urn:oasis:names:tc:SAML:attribute:subject-id"],
            "email": _EMAIL_ATTRIBUTES,
            "first_name": [
                "firstName",
                "givenName",
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
                "urn:oid:2.5.4.42",
            ],
            "last_name": [
                "lastName",
                "surname",
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname",
                "urn:oid:2.5.4.4",
            ],
        },
        # A NameID that is an address counts when no email attribute is sent (Google's default).
        "use_nameid_for_email": True,
        # allauth never matches accounts by email itself: the SSO flow does, for verified domains.
        "email_authentication": False,
        "verified_email": False,
        # Hidden from provider lists unless enabled; the SSO views refuse a disabled IdP anyway.
        "hidden": not idp.enabled,
        "advanced": {
            "strict": True,
            "want_assertion_signed": True,
            # A signed response alone doesn't do: the assertion, which is what is read, must be signed.
            "want_message_signed": False,
            "reject_deprecated_algorithm": True,
            "reject_idp_initiated_sso": not idp.allow_idp_initiated,
            "want_name_id": True,
            # Google and some Okta set-ups send the NameID alone.
            "want_attribute_statement": False,
            "want_assertion_encrypted": False,
            "authn_request_signed": False,
            "allow_repeat_attribute_name": True,
            "signature_algorithm": OneLogin_Saml2_Constants.RSA_SHA256,
            "digest_algorithm": OneLogin_Saml2_Constants.SHA256,
        },
    }


def saml_config(
    *, request: HttpRequest, app_settings: dict[str, Any], slug: str, idp: IdentityProvider
) -> dict[str, Any]:
    """python3-saml's settings: allauth's, with every signing certificate of the IdP (rollover)."""
    config: dict[str, Any] = build_saml_config(request, app_settings, slug)
    certificates = list(idp.certificates)
    if len(certificates) > 1:
        config["idp"]["x509certMulti"] = {"signing": certificates}
    return config


def sp_metadata(*, request: HttpRequest, app_settings: dict[str, Any], slug: str, idp: IdentityProvider) -> bytes:
    """Our SP metadata for the IdP's administrator (allauth's, without the single-logout endpoint,
    which is not offered)."""
    config = saml_config(request=request, app_settings=app_settings, slug=slug, idp=idp)
    config["sp"].pop("singleLogoutService", None)
    saml_settings = OneLogin_Saml2_Settings(settings=config, sp_validation_only=True)
    metadata = saml_settings.get_sp_metadata()
    errors = saml_settings.validate_metadata(metadata)
    if errors:
        raise RuntimeError(f"our SP metadata doesn't validate: {errors}")
    return metadata if isinstance(metadata, bytes) else str(metadata).encode()


def sp_urls(*, request: HttpRequest, organization: Organization) -> dict[str, str]:
    """What an IdP admin types in: our entity id (the metadata URL, allauth's default) and ACS URL,
    on the organization's host."""
    slug = organization.slug
    return {
        "entity_id": request.build_absolute_uri(reverse("saml_metadata", args=[slug])),
        "acs_url": request.build_absolute_uri(reverse("saml_acs", args=[slug])),
        "metadata_url": request.build_absolute_uri(reverse("saml_metadata", args=[slug])),
    }


def response_size_check(request: HttpRequest) -> None:
    """Refuse a POST to the ACS larger than SSO_SAML_RESPONSE_MAX_BYTES, before its body is read."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > settings.SSO_SAML_RESPONSE_MAX_BYTES:
        raise SamlRefused("too_large", f"{length} bytes")


@dataclass(frozen=True)
class ValidAssertion:
    """A response python3-saml accepted, and what the flow needs of it."""

    auth: OneLogin_Saml2_Auth
    assertion_id: str
    not_on_or_after: int  # unix time, the SubjectConfirmationData's
    in_response_to: str | None
    authn_contexts: list[str]


def saml_response_validate(
    *, acs_request: HttpRequest, app_settings: dict[str, Any], slug: str, idp: IdentityProvider
) -> ValidAssertion:
    """Validate the SAML response posted to the ACS (strict, signed assertion required). Raises
    SamlRefused with the reason."""
    encoded = acs_request.POST.get("SAMLResponse", "")
    if not encoded:
        raise SamlRefused("missing_response")
    if len(encoded) > settings.SSO_SAML_RESPONSE_MAX_BYTES:
        raise SamlRefused("too_large", f"{len(encoded)} bytes")
    request_data = prepare_django_request(acs_request)
    auth = OneLogin_Saml2_Auth(
        request_data, saml_config(request=acs_request, app_settings=app_settings, slug=slug, idp=idp)
    )
    try:
        response = OneLogin_Saml2_Response(auth.get_settings(), encoded)
    except Exception as exc:  # not base64, not XML, a DTD, an undecryptable assertion
        raise SamlRefused("malformed", type(exc).__name__) from exc
    try:
        response.is_valid(request_data, request_id=None, raise_exceptions=True)
    except OneLogin_Saml2_ValidationError as exc:
        raise SamlRefused(_REASON_BY_CODE.get(exc.code, "invalid"), str(exc)) from exc
    except Exception as exc:  # python3-saml raises others on hostile input (XPath on odd nodes)
        raise SamlRefused("invalid", type(exc).__name__) from exc
    auth.store_valid_response(response)
    assertion_id = response.get_assertion_id()
    not_on_or_after = response.get_assertion_not_on_or_after()
    if not assertion_id:
        raise SamlRefused("malformed", "assertion without an ID")
    if not not_on_or_after:
        raise SamlRefused("no_expiry")
    if not_on_or_after - time.time() > settings.SSO_ASSERTION_MAX_LIFETIME_SECONDS:
        raise SamlRefused("validity_too_long", f"NotOnOrAfter {not_on_or_after}")
    nameid = auth.get_nameid() or ""
    if len(nameid) > _UID_MAX_LENGTH:
        raise SamlRefused("invalid", "NameID too long")
    return ValidAssertion(
        auth=auth,
        assertion_id=str(assertion_id),
        not_on_or_after=int(not_on_or_after),
        in_response_to=response.get_in_response_to(),
        authn_contexts=[str(context) for context in response.get_authn_contexts()][:5],
    )


_ASSERTION_KEY = "sso:assertion:{organization_id}:{digest}"
# Kept a little past NotOnOrAfter: clocks of the web processes differ by a few seconds.
_ASSERTION_KEY_MARGIN_SECONDS = 60


def assertion_claim(*, organization: Organization, assertion: ValidAssertion) -> None:
    """Accept an assertion id once per organization, until it expires (raises SamlRefused("replayed"))."""
    digest = hashlib.sha256(assertion.assertion_id.encode()).hexdigest()
    key = _ASSERTION_KEY.format(organization_id=organization.pk, digest=digest)
    ttl = max(1, int(assertion.not_on_or_after - time.time()) + _ASSERTION_KEY_MARGIN_SECONDS)
    try:
        claimed = redis_client().set(key, "1", nx=True, ex=ttl)
    except redis.RedisError as exc:
        # Without the record of used assertions a replay can't be told apart: refuse (fail closed).
        raise SamlRefused("unavailable", f"replay cache: {type(exc).__name__}") from exc
    if not claimed:
        raise SamlRefused("replayed", assertion.assertion_id[:100])


_REFUSALS_KEY = "sso:refusals:{organization_id}:{minute}"


def refusal_audit_allowed(*, organization: Organization) -> bool:
    """Whether another refused response may be written to the organization's audit log this minute
    (SSO_REFUSALS_AUDITED_PER_MINUTE): anyone can post to an ACS, and a flood of garbage must not
    flood the log. Past the bound responses are still refused, and logged here instead."""
    key = _REFUSALS_KEY.format(organization_id=organization.pk, minute=int(time.time() // 60))
    try:
        pipe = redis_client().pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, 120)
        count = int(pipe.execute()[0])
    except redis.RedisError:
        return True  # the audit log is the record; don't lose it to a counter
    return count <= settings.SSO_REFUSALS_AUDITED_PER_MINUTE


def our_hosts(request: HttpRequest) -> set[str]:
    """The hosts a sign-in may land on: this organization's host (the request's) and the platform's."""
    _host, port = split_domain_port(request.get_host())
    hosts = {request.get_host(), settings.BASE_DOMAIN}
    if port:
        hosts.add(f"{settings.BASE_DOMAIN}:{port}")
    return hosts


def safe_next(request: HttpRequest, target: str | None) -> str | None:
    """`target` if it is a path here or a URL on one of our_hosts (http/https), else None.
    Used for RelayState and a sign-in's `next`: never a redirect to somebody else's site."""
    if not target or len(target) > 2000 or any(character in target for character in "\\\r\n\t\x00"):
        return None
    parts = urlsplit(target)
    if not parts.scheme and not parts.netloc:
        return target if target.startswith("/") and not target.startswith("//") else None
    if parts.scheme not in ("http", "https") or parts.netloc not in our_hosts(request):
        return None
    if parts.netloc == request.get_host():
        # On this host: the path alone, so the scheme can't be changed on the way.
        return parts.path + (f"?{parts.query}" if parts.query else "") or "/"
    return target
