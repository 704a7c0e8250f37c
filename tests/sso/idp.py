"""A SAML identity provider for the test suite: a key pair and a self-signed certificate made with
`cryptography`, metadata, and SAML responses built as XML and signed with xmlsec (RSA-SHA256 and
exclusive c14n, as real IdPs do; RSA-SHA1 on request, to be refused)."""

from __future__ import annotations

import base64
import copy
import datetime
import uuid
import zlib
from dataclasses import dataclass, field
from functools import cache
from urllib.parse import parse_qs, urlsplit

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XS = "http://www.w3.org/2001/XMLSchema"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
NSMAP = {"samlp": SAMLP, "saml": SAML, "ds": DS}
EMAIL_FORMAT = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
REDIRECT_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"


def _instant(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class KeyPair:
    key_pem: bytes
    cert_pem: bytes
    cert_b64: str  # base64 DER, as in metadata


def _key_pair(common_name: str) -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return KeyPair(
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        cert_pem=certificate.public_bytes(serialization.Encoding.PEM),
        cert_b64=base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode(),
    )


@cache
def key_pair(name: str) -> KeyPair:
    """One key pair per name for the whole test session (made once: RSA generation is slow-ish)."""
    return _key_pair(f"Test IdP {name}")


@dataclass
class Assertion:
    """What goes into a response; every field can be bent by a test."""

    sp_entity_id: str
    acs_url: str
    email: str
    in_response_to: str | None = None
    issuer: str = ""
    destination: str | None = None  # defaults to acs_url
    recipient: str | None = None  # defaults to acs_url
    audience: str | None = None  # defaults to sp_entity_id
    not_before: datetime.datetime | None = None
    not_on_or_after: datetime.datetime | None = None
    subject_not_on_or_after: datetime.datetime | None = None
    authn_context: str = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
    attributes: dict[str, str] = field(default_factory=dict)
    assertion_id: str = field(default_factory=lambda: f"_a{uuid.uuid4().hex}")
    response_id: str = field(default_factory=lambda: f"_r{uuid.uuid4().hex}")


class TestIdp:
    """An IdP with an entity id and a key pair (by name: "a", "b", "attacker")."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, name: str, *, entity_id: str | None = None) -> None:
        self.name = name
        self.entity_id = entity_id or f"https://idp-{name}.example.test/saml"
        self.sso_url = f"https://idp-{name}.example.test/sso"
        self.keys = key_pair(name)

    def metadata_xml(self, *, extra_certificates: list[str] | None = None, with_certificate: bool = True) -> str:
        root = etree.Element(f"{{{MD}}}EntityDescriptor", nsmap={"md": MD, "ds": DS}, entityID=self.entity_id)
        descriptor = etree.SubElement(
            root,
            f"{{{MD}}}IDPSSODescriptor",
            protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol",
        )
        certificates = ([self.keys.cert_b64] if with_certificate else []) + list(extra_certificates or [])
        for certificate in certificates:
            key_descriptor = etree.SubElement(descriptor, f"{{{MD}}}KeyDescriptor", use="signing")
            key_info = etree.SubElement(key_descriptor, f"{{{DS}}}KeyInfo")
            data = etree.SubElement(key_info, f"{{{DS}}}X509Data")
            etree.SubElement(data, f"{{{DS}}}X509Certificate").text = certificate
        name_id_format = etree.SubElement(descriptor, f"{{{MD}}}NameIDFormat")
        name_id_format.text = EMAIL_FORMAT
        etree.SubElement(descriptor, f"{{{MD}}}SingleSignOnService", Binding=REDIRECT_BINDING, Location=self.sso_url)
        return str(etree.tostring(root, xml_declaration=True, encoding="UTF-8").decode())

    def response_tree(self, spec: Assertion) -> etree._Element:
        """The unsigned response (Response > Issuer, Status, Assertion), schema-valid."""
        now = _now()
        issuer = spec.issuer or self.entity_id
        response = etree.Element(
            f"{{{SAMLP}}}Response",
            nsmap={"samlp": SAMLP, "saml": SAML},
            ID=spec.response_id,
            Version="2.0",
            IssueInstant=_instant(now),
            Destination=spec.acs_url if spec.destination is None else spec.destination,
        )
        if spec.in_response_to:
            response.set("InResponseTo", spec.in_response_to)
        etree.SubElement(response, f"{{{SAML}}}Issuer").text = issuer
        status = etree.SubElement(response, f"{{{SAMLP}}}Status")
        etree.SubElement(status, f"{{{SAMLP}}}StatusCode", Value="urn:oasis:names:tc:SAML:2.0:status:Success")

        assertion = etree.SubElement(
            response, f"{{{SAML}}}Assertion", ID=spec.assertion_id, Version="2.0", IssueInstant=_instant(now)
        )
        etree.SubElement(assertion, f"{{{SAML}}}Issuer").text = issuer
        subject = etree.SubElement(assertion, f"{{{SAML}}}Subject")
        etree.SubElement(subject, f"{{{SAML}}}NameID", Format=EMAIL_FORMAT).text = spec.email
        confirmation = etree.SubElement(
            subject, f"{{{SAML}}}SubjectConfirmation", Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"
        )
        confirmation_data = etree.SubElement(
            confirmation,
            f"{{{SAML}}}SubjectConfirmationData",
            NotOnOrAfter=_instant(spec.subject_not_on_or_after or now + datetime.timedelta(minutes=5)),
            Recipient=spec.acs_url if spec.recipient is None else spec.recipient,
        )
        if spec.in_response_to:
            confirmation_data.set("InResponseTo", spec.in_response_to)
        conditions = etree.SubElement(
            assertion,
            f"{{{SAML}}}Conditions",
            NotBefore=_instant(spec.not_before or now - datetime.timedelta(minutes=1)),
            NotOnOrAfter=_instant(spec.not_on_or_after or now + datetime.timedelta(minutes=5)),
        )
        restriction = etree.SubElement(conditions, f"{{{SAML}}}AudienceRestriction")
        etree.SubElement(restriction, f"{{{SAML}}}Audience").text = spec.audience or spec.sp_entity_id
        statement = etree.SubElement(
            assertion,
            f"{{{SAML}}}AuthnStatement",
            AuthnInstant=_instant(now),
            SessionIndex=f"_s{uuid.uuid4().hex}",
        )
        context = etree.SubElement(statement, f"{{{SAML}}}AuthnContext")
        etree.SubElement(context, f"{{{SAML}}}AuthnContextClassRef").text = spec.authn_context
        attributes = {"email": spec.email, **spec.attributes}
        attribute_statement = etree.SubElement(assertion, f"{{{SAML}}}AttributeStatement")
        for name, value in attributes.items():
            attribute = etree.SubElement(
                attribute_statement,
                f"{{{SAML}}}Attribute",
                Name=name,
                NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic",
            )
            attribute_value = etree.SubElement(attribute, f"{{{SAML}}}AttributeValue", nsmap={"xs": XS, "xsi": XSI})
            attribute_value.set(f"{{{XSI}}}type", "xs:string")
            attribute_value.text = value
        return response

    def sign(self, element: etree._Element, *, algorithm: str = "sha256", keys: KeyPair | None = None) -> None:
        """Sign `element` (an Assertion or the Response) in place: enveloped signature after its Issuer."""
        keys = keys or self.keys
        if algorithm == "sha256":
            method, digest = xmlsec.constants.TransformRsaSha256, xmlsec.constants.TransformSha256
        else:
            method, digest = xmlsec.constants.TransformRsaSha1, xmlsec.constants.TransformSha1
        signature = xmlsec.template.create(element, xmlsec.constants.TransformExclC14N, method, ns="ds")
        element.insert(1, signature)  # after the Issuer, as the schema wants
        reference = xmlsec.template.add_reference(signature, digest, uri=f"#{element.get('ID')}")
        xmlsec.template.add_transform(reference, xmlsec.constants.TransformEnveloped)
        xmlsec.template.add_transform(reference, xmlsec.constants.TransformExclC14N)
        key_info = xmlsec.template.ensure_key_info(signature)
        xmlsec.template.add_x509_data(key_info)
        context = xmlsec.SignatureContext()
        key = xmlsec.Key.from_memory(keys.key_pem, xmlsec.constants.KeyDataFormatPem)
        key.load_cert_from_memory(keys.cert_pem, xmlsec.constants.KeyDataFormatPem)
        context.key = key
        context.register_id(element, "ID")
        context.sign(signature)

    def response(
        self,
        spec: Assertion,
        *,
        sign: str = "assertion",
        algorithm: str = "sha256",
        keys: KeyPair | None = None,
    ) -> etree._Element:
        """A response signed as asked: "assertion" (the usual), "response", "both" or "none"."""
        tree = self.response_tree(spec)
        if sign in ("assertion", "both"):
            self.sign(assertion_of(tree), algorithm=algorithm, keys=keys)
        if sign in ("response", "both"):
            self.sign(tree, algorithm=algorithm, keys=keys)
        return tree


def assertion_of(tree: etree._Element) -> etree._Element:
    found = tree.find(f"{{{SAML}}}Assertion")
    assert found is not None
    return found


def encoded(tree: etree._Element) -> str:
    """The SAMLResponse form value (HTTP-POST binding)."""
    return base64.b64encode(etree.tostring(tree)).decode()


def authn_request_id(location: str) -> str:
    """The ID of the AuthnRequest in an HTTP-Redirect binding URL (to answer it, InResponseTo)."""
    query = parse_qs(urlsplit(location).query)
    xml = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15)
    request_id = etree.fromstring(xml).get("ID")
    assert request_id
    return str(request_id)


# --- Signature wrapping (XSW): a validly signed response, rearranged ---------------------------------


def xsw_second_assertion(tree: etree._Element, *, evil_email: str) -> etree._Element:
    """An unsigned copy of the signed assertion (another subject) placed before it: a reader that
    takes the first assertion would read the attacker's while the signature still verifies."""
    tree = copy.deepcopy(tree)
    signed = assertion_of(tree)
    evil = copy.deepcopy(signed)
    evil.set("ID", f"_evil{uuid.uuid4().hex}")
    signature = evil.find(f"{{{DS}}}Signature")
    assert signature is not None
    evil.remove(signature)
    _set_subject(evil, evil_email)
    signed.addprevious(evil)
    return tree


def xsw_moved_into_extensions(tree: etree._Element, *, evil_email: str) -> etree._Element:
    """The signed assertion moved into the Response's Extensions, an unsigned one in its place."""
    tree = copy.deepcopy(tree)
    signed = assertion_of(tree)
    evil = copy.deepcopy(signed)
    evil.set("ID", f"_evil{uuid.uuid4().hex}")
    signature = evil.find(f"{{{DS}}}Signature")
    assert signature is not None
    evil.remove(signature)
    _set_subject(evil, evil_email)
    tree.remove(signed)
    extensions = etree.Element(f"{{{SAMLP}}}Extensions")
    extensions.append(signed)
    tree.insert(1, extensions)  # after the Issuer
    tree.append(evil)
    return tree


def xsw_signature_points_elsewhere(tree: etree._Element, *, evil_email: str) -> etree._Element:
    """The only assertion is the attacker's (new ID), carrying the original signature whose
    Reference still points at the original ID, the original assertion hidden in the signature's
    ds:Object."""
    tree = copy.deepcopy(tree)
    signed = assertion_of(tree)
    original = copy.deepcopy(signed)
    signature = signed.find(f"{{{DS}}}Signature")
    assert signature is not None
    signed.set("ID", f"_evil{uuid.uuid4().hex}")
    _set_subject(signed, evil_email)
    hidden = etree.SubElement(signature, f"{{{DS}}}Object")
    original_signature = original.find(f"{{{DS}}}Signature")
    assert original_signature is not None
    original.remove(original_signature)
    hidden.append(original)
    return tree


def tampered(tree: etree._Element, *, evil_email: str) -> etree._Element:
    """The signed assertion's subject changed after signing (the digest no longer matches)."""
    tree = copy.deepcopy(tree)
    _set_subject(assertion_of(tree), evil_email)
    return tree


def _set_subject(assertion: etree._Element, email: str) -> None:
    for node in assertion.iter(f"{{{SAML}}}NameID"):
        node.text = email
    for node in assertion.iter(f"{{{SAML}}}AttributeValue"):
        node.text = email
