"""SAML SSO and verified email domains (apps.sso)."""

from .env import env_bool, env_int, env_list, env_str

# Verified domains: the resolvers asked for `_cognitionos-verification.<domain>` TXT records, as
# "address" or "address:port" (empty: the machine's own resolver configuration). The tests point it
# at a DNS server of their own on 127.0.0.1.
SSO_DNS_NAMESERVERS = env_list("SSO_DNS_NAMESERVERS", [])
# One verification's whole DNS lookup (every resolver and retry) ends within this many seconds.
SSO_DNS_TIMEOUT_SECONDS = float(env_str("SSO_DNS_TIMEOUT_SECONDS", "5"))
# DNS lookups an organization may start per minute (the "Verify" button), so one can't make the
# platform a DNS cannon.
SSO_DNS_CHECKS_PER_MINUTE = env_int("SSO_DNS_CHECKS_PER_MINUTE", 10)
# Email domains one organization may claim (verified or not).
SSO_MAX_DOMAINS = env_int("SSO_MAX_DOMAINS", 20)

# SAML sign-in (sso-core). A SAMLResponse POST larger than this is refused before it is parsed.
SSO_SAML_RESPONSE_MAX_BYTES = env_int("SSO_SAML_RESPONSE_MAX_BYTES", 256 * 1024)
# An IdP's metadata, pasted or fetched (https, public addresses, no redirects), is at most this big
# and must arrive within this many seconds.
SSO_METADATA_MAX_BYTES = env_int("SSO_METADATA_MAX_BYTES", 256 * 1024)
SSO_METADATA_FETCH_TIMEOUT_SECONDS = float(env_str("SSO_METADATA_FETCH_TIMEOUT_SECONDS", "10"))
# An assertion's id is remembered until its NotOnOrAfter (replays refused); one that claims to stay
# valid longer than this is refused rather than remembered for that long.
SSO_ASSERTION_MAX_LIFETIME_SECONDS = env_int("SSO_ASSERTION_MAX_LIFETIME_SECONDS", 24 * 3600)
# Metadata URLs are https only (a certificate fetched over http could be swapped on the way); the
# test suite turns this on for its local metadata server.
SSO_METADATA_ALLOW_HTTP = env_bool("SSO_METADATA_ALLOW_HTTP", False)
# Refused SAML responses written to an organization's audit log per minute; past it they are still
# refused, and logged instead (anyone can post to an ACS: a flood must not flood the audit log).
SSO_REFUSALS_AUDITED_PER_MINUTE = env_int("SSO_REFUSALS_AUDITED_PER_MINUTE", 60)
