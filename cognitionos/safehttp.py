"""Outgoing HTTP that cannot be pointed at our own network (SSRF-safe): webhook deliveries, workflow
HTTP steps, SSO metadata fetches.

    from cognitionos.safehttp import OutboundError, OutboundRefused, outbound_request

    try:
        response = outbound_request(method="POST", url=url, headers={"Content-Type": "application/json"},
                                    content=body, timeout_s=10)
    except OutboundRefused:   # the URL is not allowed (scheme, or a private/loopback/... address)
        ...
    except OutboundError:     # DNS failure, connection refused, TLS error, timeout
        ...
    response.status_code, response.headers, response.content, response.truncated

What it guarantees:
- http and https only, no credentials through proxies from the environment (`trust_env` off);
- the host name is resolved once, and the request is refused if ANY of its addresses is private,
  loopback, link-local (169.254.169.254, the cloud metadata service), multicast, reserved,
  unspecified, shared (100.64/10), or an IPv4-mapped, NAT64, 6to4 or Teredo form of one of those,
  unless the setting `OUTBOUND_ALLOW_PRIVATE_NETWORKS` is on (tests and development);
- the connection goes to the address that was checked (no second lookup, so DNS rebinding can't
  swap it), with the name kept in the Host header, in TLS SNI and for certificate verification;
- redirects are never followed: a 3xx comes back as the response (re-check its Location yourself
  with another `outbound_request` if you want to follow it);
- one timeout for connect, write and each read, and an overall deadline for the body; the body is
  read up to `max_response_bytes` (then `truncated` is set and the rest is not read).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

import certifi
import httpx
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

__all__ = [
    "OutboundError",
    "OutboundRefused",
    "OutboundResponse",
    "outbound_request",
    "outbound_url_check",
]


class OutboundRefused(Exception):
    """The request was not sent: scheme not allowed, or the host is (or resolves to) a forbidden address."""


class OutboundError(Exception):
    """The request was allowed but failed: name not found, connection or TLS failure, timeout."""


@dataclass(frozen=True)
class OutboundResponse:
    status_code: int
    headers: httpx.Headers
    content: bytes  # at most max_response_bytes
    truncated: bool  # the body was longer than max_response_bytes
    elapsed_s: float
    remote_ip: str  # the address actually connected to

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def text(self, limit: int | None = None) -> str:
        return self.content[:limit].decode("utf-8", errors="replace")


# Networks never reachable from here, besides what the ipaddress module flags (its lists differ
# between Python patch releases, so the ones that matter are spelled out).
_FORBIDDEN_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "::/96",  # IPv4-compatible (deprecated)
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Never a sensible destination, even where private networks are allowed.
_NEVER = (ipaddress.ip_network("0.0.0.0/8"), ipaddress.ip_network("::/128"), ipaddress.ip_network("255.255.255.255/32"))


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_forbidden_reason(address: IPAddress) -> str | None:
    """Why `address` is not a public unicast address (None if it is one)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = address_forbidden_reason(embedded)
            if reason is not None:
                return f"{reason} (embedded in {address})"
            if address.ipv4_mapped is not None:
                return None  # ::ffff:<public v4> is that public address
    for flag in ("is_loopback", "is_link_local", "is_multicast", "is_unspecified", "is_reserved", "is_private"):
        if getattr(address, flag):
            return f"{address} is {flag[3:].replace('_', '-')}"
    for network in _FORBIDDEN_NETWORKS:
        if address.version == network.version and address in network:
            return f"{address} is in the non-public network {network}"
    if not address.is_global:
        return f"{address} is not a global address"
    return None


def _never_reason(address: IPAddress) -> str | None:
    if address.is_multicast:
        return f"{address} is multicast"
    for network in _NEVER:
        if address.version == network.version and address in network:
            return f"{address} is not a destination"
    return None


@dataclass(frozen=True)
class _Target:
    url: httpx.URL
    host: str  # ASCII (IDNA) host name as in the URL
    port: int
    address: IPAddress


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise OutboundRefused(f"not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise OutboundRefused(f"only http and https URLs are allowed, not {parsed.scheme or 'none'!r}")
    if not parsed.host:
        raise OutboundRefused("the URL has no host")
    return parsed


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OutboundError(f"cannot resolve {host}: {exc}") from exc
    addresses: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OutboundError(f"{host} has no address")
    return addresses


def _vet(addresses: list[IPAddress], host: str) -> IPAddress:
    allow_private = bool(getattr(settings, "OUTBOUND_ALLOW_PRIVATE_NETWORKS", False))
    for address in addresses:
        reason = _never_reason(address) or (None if allow_private else address_forbidden_reason(address))
        if reason is not None:
            raise OutboundRefused(f"{host} resolves to a forbidden address: {reason}")
    return addresses[0]


def _target(url: str) -> _Target:
    parsed = _parse(url)
    host = parsed.raw_host.decode("ascii")  # IDNA-encoded by httpx; IPv6 without brackets
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    address = _vet(_resolve(host, port), host)
    return _Target(url=parsed, host=host, port=port, address=address)


@functools.cache
def _tls_context_for(bundle: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=bundle or certifi.where())


def _tls_context() -> ssl.SSLContext:
    """One verifying context per CA bundle, shared by every request (loading certifi takes ~20 ms)."""
    return _tls_context_for(str(getattr(settings, "OUTBOUND_CA_BUNDLE", "") or ""))


def outbound_url_check(url: str) -> None:
    """Raise OutboundRefused if a request to `url` would be refused now (scheme, host, addresses).
    For validating a URL when it is saved; `outbound_request` checks again when it sends."""
    try:
        _target(url)
    except OutboundError as exc:
        raise OutboundRefused(str(exc)) from exc


def outbound_request(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    content: bytes | str | None = None,
    timeout_s: float | None = None,
    max_response_bytes: int | None = None,
) -> OutboundResponse:
    """Send one HTTP request to a public address and return its (possibly truncated) response.

    Raises OutboundRefused (not sent: URL or address not allowed) or OutboundError (sent or tried,
    but failed: DNS, connection, TLS, timeout). Any HTTP status, 3xx and 5xx included, is a response.
    `timeout_s` (default OUTBOUND_TIMEOUT_SECONDS) bounds connect, write and each read, and the whole
    body must arrive within twice that. `max_response_bytes` defaults to OUTBOUND_MAX_RESPONSE_BYTES.
    """
    timeout = float(timeout_s if timeout_s is not None else settings.OUTBOUND_TIMEOUT_SECONDS)
    cap = int(max_response_bytes if max_response_bytes is not None else settings.OUTBOUND_MAX_RESPONSE_BYTES)
    target = _target(url)
    default_port = 443 if target.url.scheme == "https" else 80
    host_header = target.host if ":" not in target.host else f"[{target.host}]"
    if target.port != default_port:
        host_header = f"{host_header}:{target.port}"
    try:
        request_headers = httpx.Headers(headers or {})
    except (UnicodeError, TypeError, ValueError) as exc:
        raise OutboundRefused(f"invalid request header: {exc}") from exc
    request_headers["Host"] = host_header
    if "Accept-Encoding" not in request_headers:
        # A compressed body would make the size cap count compressed bytes: ask for none.
        request_headers["Accept-Encoding"] = "identity"
    pinned = target.url.copy_with(host=str(target.address))
    extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
    started = time.monotonic()
    deadline = started + 2 * timeout
    body = bytearray()
    truncated = False
    # One client per request: connections are never pooled across host names sharing an address.
    with httpx.Client(
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        verify=_tls_context(),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=0),
    ) as client:
        try:
            request = client.build_request(
                method.upper(), pinned, headers=request_headers, content=content, extensions=extensions
            )
            response = client.send(request, stream=True)
            try:
                for chunk in response.iter_raw():
                    room = cap - len(body)
                    if len(chunk) > room:
                        body.extend(chunk[:room])
                        truncated = True
                        break
                    body.extend(chunk)
                    if time.monotonic() > deadline:
                        raise OutboundError(f"the response body took longer than {2 * timeout:.0f} s")
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            raise OutboundError(f"timed out after {timeout:.0f} s ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise OutboundError(f"{type(exc).__name__}: {exc}") from exc
    return OutboundResponse(
        status_code=response.status_code,
        headers=response.headers,
        content=bytes(body),
        truncated=truncated,
        elapsed_s=time.monotonic() - started,
        remote_ip=str(target.address),
    )
