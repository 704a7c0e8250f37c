"""An identity provider's SAML metadata: read (python3-saml's parser), fetched (the SSRF-safe client)
and checked before anything is stored."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography import x509
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from onelogin.saml2.constants import OneLogin_Saml2_Constants
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser

from cognitionos.safehttp import OutboundError, OutboundRefused, outbound_request

# More signing certificates than a rollover needs is a mistake (or a way to make every check slow).
MAX_CERTIFICATES = 5
_MAX_CERTIFICATE_CHARS = 16_384


class MetadataInvalid(Exception):
    """The metadata can't be used; the message says why, for the admin who pasted it."""


@dataclass(frozen=True)
class IdpMetadata:
    entity_id: str
    sso_url: str
    certificates: list[str]  # base64 DER, signing
    xml: str


def metadata_fetch(url: str) -> str:
    """The metadata document at `url` (https, public address, no redirects, bounded size and time)."""
    schemes = ["https", "http"] if settings.SSO_METADATA_ALLOW_HTTP else ["https"]
    try:
        URLValidator(schemes=schemes)(url)
    except ValidationError as exc:
        raise MetadataInvalid("the metadata URL must be an https:// URL") from exc
    if len(url) > 2048:
        raise MetadataInvalid("the metadata URL is longer than 2048 characters")
    limit = settings.SSO_METADATA_MAX_BYTES
    try:
        response = outbound_request(
            method="GET",
            url=url,
            headers={"Accept": "application/samlmetadata+xml, application/xml, text/xml"},
            timeout_s=settings.SSO_METADATA_FETCH_TIMEOUT_SECONDS,
            max_response_bytes=limit,
        )
    except OutboundRefused as exc:
        raise MetadataInvalid(f"this URL can't be fetched: {exc}") from exc
    except OutboundError as exc:
        raise MetadataInvalid(f"the metadata URL could not be fetched: {exc}") from exc
    if 300 <= response.status_code < 400:
        raise MetadataInvalid("the metadata URL redirects elsewhere: paste the final URL (redirects are not followed)")
    if not response.is_success:
        raise MetadataInvalid(f"the metadata URL answered HTTP {response.status_code}")
    if response.truncated:
        raise MetadataInvalid(f"the metadata is larger than {limit // 1024} KiB")
    try:
        return response.content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetadataInvalid("the metadata is not UTF-8 text") from exc


def _certificate_check(encoded: str) -> str:
    if len(encoded) > _MAX_CERTIFICATE_CHARS:
        raise MetadataInvalid("a signing certificate in the metadata is too large")
    try:
        x509.load_der_x509_certificate(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise MetadataInvalid("a signing certificate in the metadata is not a valid X.509 certificate") from exc
    return encoded


def metadata_parse(xml: str) -> IdpMetadata:
    """Read an IdP's metadata: its entity id, its HTTP-Redirect SSO URL and its signing certificates."""
    if not xml.strip():
        raise MetadataInvalid("the metadata is empty")
    limit = settings.SSO_METADATA_MAX_BYTES
    if len(xml.encode("utf-8")) > limit:
        raise MetadataInvalid(f"the metadata is larger than {limit // 1024} KiB")
    try:
        parsed = OneLogin_Saml2_IdPMetadataParser.parse(
            xml, required_sso_binding=OneLogin_Saml2_Constants.BINDING_HTTP_REDIRECT
        )
    except Exception as exc:  # not XML, a DTD or entities (refused by the parser), odd nodes
        raise MetadataInvalid("the metadata is not a readable SAML metadata XML document") from exc
    idp = parsed.get("idp") or {}
    entity_id = str(idp.get("entityId") or "").strip()
    if not entity_id:
        raise MetadataInvalid("the metadata has no identity provider (IDPSSODescriptor) with an entityID")
    if len(entity_id) > 1024:
        raise MetadataInvalid("the identity provider's entityID is longer than 1024 characters")
    sso_url = str((idp.get("singleSignOnService") or {}).get("url") or "").strip()
    if not sso_url:
        raise MetadataInvalid("the metadata has no SingleSignOnService with the HTTP-Redirect binding")
    try:
        URLValidator(schemes=["https"])(sso_url)
    except ValidationError as exc:
        raise MetadataInvalid("the identity provider's SingleSignOnService must be an https:// URL") from exc
    if len(sso_url) > 2048:
        raise MetadataInvalid("the identity provider's SingleSignOnService URL is too long")
    if idp.get("x509cert"):
        certificates = [idp["x509cert"]]
    else:
        certificates = list((idp.get("x509certMulti") or {}).get("signing") or [])
    certificates = list(dict.fromkeys(certificate for certificate in certificates if certificate))
    if not certificates:
        raise MetadataInvalid(
            'the metadata has no signing certificate (KeyDescriptor use="signing"): responses couldn\'t be checked'
        )
    if len(certificates) > MAX_CERTIFICATES:
        raise MetadataInvalid(f"the metadata has more than {MAX_CERTIFICATES} signing certificates")
    return IdpMetadata(
        entity_id=entity_id,
        sso_url=sso_url,
        certificates=[_certificate_check(certificate) for certificate in certificates],
        xml=xml,
    )
