"""Email domains an organization claims: normalising a name, and proving control of it through DNS.

Proof of control: the organization publishes a TXT record at

    _cognitionos-verification.<domain>   "cognitionos-verification=<token>"

A record of its own name rather than at the apex: the apex's TXT set is shared with SPF and other
vendors' proofs (and often managed by another team), an underscore label is unambiguous, can be
added and removed without touching mail, and can't be a host name.
"""

from __future__ import annotations

import enum
import hmac
import re
import secrets
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import idna
from django.conf import settings

from apps.sso.models import DOMAIN_PATTERN

VERIFICATION_LABEL = "_cognitionos-verification"
VERIFICATION_PREFIX = "cognitionos-verification="

# Domains of public mailbox providers: anyone can have an address there, so nobody may claim one
# (a claim would route every gmail.com user's sign-in to one organization's IdP). A short list of
# the big ones; operators can refuse others in the admin.
PUBLIC_EMAIL_DOMAINS = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "msn.com",
        "yahoo.com",
        "ymail.com",
        "rocketmail.com",
        "aol.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "proton.me",
        "protonmail.com",
        "pm.me",
        "gmx.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "mail.com",
        "yandex.com",
        "yandex.ru",
        "mail.ru",
        "zoho.com",
        "qq.com",
        "163.com",
        "126.com",
        "fastmail.com",
        "hey.com",
        "tutanota.com",
        "tuta.io",
        "example.com",
        "example.org",
        "example.net",
    }
)
# Regional variants (yahoo.co.uk, hotmail.fr, outlook.de, ...): these providers' names under any
# country or generic suffix.
_PUBLIC_PROVIDER_NAMES = frozenset({"gmail", "googlemail", "outlook", "hotmail", "live", "yahoo", "ymail", "aol"})
_COUNTRY_SUFFIX = re.compile(r"^(co\.|com\.)?[a-z]{2,3}$")
_DOMAIN_RE = re.compile(DOMAIN_PATTERN)
_MAX_TXT_RECORDS = 50  # a verification reads at most this many records of the name


class DomainInvalid(ValueError):
    """The text is not a domain we can claim; the message says why, for the person who typed it."""


def domain_normalize(raw: str) -> str:
    """Lowercase ASCII (IDNA/punycode) form of a domain name typed by a person, or DomainInvalid.

    Accepts "Example.COM", "example.com.", "bücher.example", and an email address's domain part
    ("@example.com"); refuses addresses, URLs, IP addresses, single labels and public providers."""
    text = (raw or "").strip().rstrip(".").lower()
    if text.startswith("@"):
        text = text[1:]
    if not text:
        raise DomainInvalid("Enter a domain, such as example.com.")
    if len(text) > 253 or any(ch in text for ch in "@/:\\ ?#"):
        raise DomainInvalid("Enter only the domain, such as example.com (no address, path or port).")
    try:
        ascii_name = idna.encode(text, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise DomainInvalid("This is not a valid domain name.") from exc
    labels = ascii_name.split(".")
    if (
        len(ascii_name) > 253
        or not _DOMAIN_RE.fullmatch(ascii_name)
        or any(len(label) > 63 for label in labels)
        or labels[-1].isdigit()  # an IPv4 address, or a made-up numeric top-level domain
    ):
        raise DomainInvalid("This is not a valid domain name (letters, digits and hyphens, like example.com).")
    if domain_is_public_provider(ascii_name):
        raise DomainInvalid(f"{ascii_name} is a public email provider: anyone can have an address there.")
    return ascii_name


def domain_is_public_provider(domain: str) -> bool:
    if domain in PUBLIC_EMAIL_DOMAINS:
        return True
    first, _, rest = domain.partition(".")
    return first in _PUBLIC_PROVIDER_NAMES and bool(_COUNTRY_SUFFIX.fullmatch(rest))


def email_domain(email: str) -> str | None:
    """The normalised domain of an email address, None when it has none we could match."""
    _local, at, domain = (email or "").strip().rpartition("@")
    if not at or not _local:
        return None
    try:
        return idna.encode(domain.rstrip(".").lower(), uts46=True).decode("ascii")
    except idna.IDNAError:
        return None


def verification_token_new() -> str:
    return secrets.token_hex(16)


def verification_record_name(domain: str) -> str:
    return f"{VERIFICATION_LABEL}.{domain}"


def verification_record_value(token: str) -> str:
    return f"{VERIFICATION_PREFIX}{token}"


class DnsOutcome(enum.Enum):
    FOUND = "found"
    NOT_FOUND = "not_found"  # the name exists (or not) but carries no matching record
    UNREACHABLE = "unreachable"  # no resolver answered in time; try again later


@dataclass(frozen=True)
class DnsCheck:
    outcome: DnsOutcome
    detail: str  # for the person: what was looked up and what happened


def _resolver() -> dns.resolver.Resolver:
    configured = list(settings.SSO_DNS_NAMESERVERS)
    resolver = dns.resolver.Resolver(configure=not configured)
    if configured:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(*_split_nameserver(entry)) for entry in configured]
    resolver.lifetime = float(settings.SSO_DNS_TIMEOUT_SECONDS)
    resolver.timeout = min(resolver.timeout, resolver.lifetime)
    # Answers are never cached in process: a record the organization just published must count.
    resolver.cache = None
    return resolver


def _split_nameserver(entry: str) -> tuple[str, int]:
    entry = entry.strip()
    if entry.startswith("["):  # [::1]:5353
        address, _, rest = entry[1:].partition("]")
        return address, int(rest[1:]) if rest.startswith(":") else 53
    if entry.count(":") == 1:
        address, _, port = entry.partition(":")
        return address, int(port)
    return entry, 53


def dns_txt_check(*, domain: str, token: str) -> DnsCheck:
    """Look up the verification record of `domain` and say whether it carries `token`."""
    name = verification_record_name(domain)
    expected = verification_record_value(token).encode("ascii")
    try:
        answer = _resolver().resolve(dns.name.from_text(name), dns.rdatatype.TXT, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return DnsCheck(DnsOutcome.NOT_FOUND, f"No TXT record found at {name}.")
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout):
        return DnsCheck(DnsOutcome.UNREACHABLE, f"The DNS lookup of {name} did not complete; try again in a minute.")
    except dns.exception.DNSException:
        return DnsCheck(DnsOutcome.UNREACHABLE, f"The DNS lookup of {name} failed; try again in a minute.")
    for index, record in enumerate(answer):
        if index >= _MAX_TXT_RECORDS:
            break
        # A TXT record is one or more strings; long values are split into 255-byte pieces.
        value = b"".join(record.strings).strip()
        if hmac.compare_digest(value, expected):
            return DnsCheck(DnsOutcome.FOUND, f"Found the verification record at {name}.")
    return DnsCheck(DnsOutcome.NOT_FOUND, f"{name} has TXT records, but none is {verification_record_value(token)!r}.")
