"""A real DNS server on 127.0.0.1 for tests (dnslib's DNSServer, UDP and TCP), answering TXT
records the test sets, and NXDOMAIN for every other name. The code under test talks to it with
dnspython over the network, as it would to any resolver.

    with dns_server_running() as server:
        server.txt["_cognitionos-verification.acme.test"] = ["cognitionos-verification=abc"]
        settings.SSO_DNS_NAMESERVERS = [server.address]
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord  # type: ignore[import-untyped]
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer  # type: ignore[import-untyped]


class TxtResolver(BaseResolver):
    def __init__(self) -> None:
        self.txt: dict[str, list[str | list[str]]] = {}
        self.queries: list[str] = []
        self._lock = threading.Lock()

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        with self._lock:
            self.queries.append(name)
            values = self.txt.get(name)
        if values is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if request.q.qtype in (QTYPE.TXT, QTYPE.ANY):
            for value in values:
                # A list: one record made of several strings (how long values are published).
                strings = value if isinstance(value, list) else [value]
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(strings), ttl=60))
        return reply


class RunningDnsServer:
    def __init__(self, resolver: TxtResolver, port: int) -> None:
        self.resolver = resolver
        self.port = port

    @property
    def txt(self) -> dict[str, list[str | list[str]]]:
        return self.resolver.txt

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _free_port() -> int:
    # UDP and TCP on the same number (dnspython retries over TCP when an answer is truncated).
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


@contextlib.contextmanager
def dns_server_running() -> Iterator[RunningDnsServer]:
    resolver = TxtResolver()
    port = _free_port()
    quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
    udp = DNSServer(resolver, address="127.0.0.1", port=port, logger=quiet)
    tcp = DNSServer(resolver, address="127.0.0.1", port=port, tcp=True, logger=quiet)
    udp.start_thread()
    tcp.start_thread()
    try:
        yield RunningDnsServer(resolver, port)
    finally:
        udp.stop()
        tcp.stop()
        udp.server.server_close()
        tcp.server.server_close()


@contextlib.contextmanager
def silent_dns_server() -> Iterator[str]:
    """A UDP socket on 127.0.0.1 that reads queries and never answers: a resolver that times out."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"
