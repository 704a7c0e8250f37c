"""The SSRF-safe client: forbidden addresses refused, the checked address used, no redirects, caps."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cognitionos.safehttp import (
    OutboundError,
    OutboundRefused,
    address_forbidden_reason,
    outbound_request,
    outbound_url_check,
)
from tests.webhooks.receiver import http_receiver

FORBIDDEN_URLS = [
    "http://127.0.0.1/",
    "http://127.8.9.10:8080/x",
    "http://10.1.2.3/",
    "http://172.16.5.4/",
    "http://192.168.0.1/",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://100.64.0.1/",  # shared address space (carrier NAT)
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://[::1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped metadata
    "http://[::ffff:10.0.0.1]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[ff02::1]/",
    "http://2130706433/",  # 127.0.0.1 as a single number
    "http://0x7f.1/",  # and in hex shorthand
]


@pytest.fixture
def private_refused(settings: Any) -> None:
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = False


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, list[list[str]]], list[str]]:
    """Make `name` resolve to the given address lists, one list per lookup (the last repeats);
    returns the log of lookups of that name. Other names and IP literals resolve for real."""
    real = socket.getaddrinfo

    def install(name: str, answers: list[list[str]]) -> list[str]:
        lookups: list[str] = []

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host != name:
                return real(host, port, *args, **kwargs)
            lookups.append(host)
            addresses = answers[min(len(lookups), len(answers)) - 1]
            result = []
            for address in addresses:
                ip = ipaddress.ip_address(address)
                family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
                sockaddr = (address, int(port or 0), 0, 0) if ip.version == 6 else (address, int(port or 0))
                result.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
            return result

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        return lookups

    return install


@pytest.mark.usefixtures("private_refused")
@pytest.mark.parametrize("url", FORBIDDEN_URLS)
def test_non_public_addresses_are_refused_before_connecting(url: str) -> None:
    with pytest.raises(OutboundRefused):
        outbound_request(method="GET", url=url, timeout_s=1)
    with pytest.raises(OutboundRefused):
        outbound_url_check(url)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_forbidden_reason(ipaddress.ip_address(address)) is None


@pytest.mark.usefixtures("private_refused")
def test_a_name_with_any_private_address_is_refused(fake_dns: Callable[[str, list[list[str]]], list[str]]) -> None:
    lookups = fake_dns("mixed.example.test", [["93.184.216.34", "10.0.0.7"]])
    with pytest.raises(OutboundRefused, match=r"10\.0\.0\.7"):
        outbound_request(method="POST", url="https://mixed.example.test/hook", content=b"{}", timeout_s=1)
    assert lookups == ["mixed.example.test"]


@pytest.mark.usefixtures("private_refused")
def test_localhost_by_name_is_refused() -> None:
    with pytest.raises(OutboundRefused):
        outbound_request(method="GET", url="http://localhost:9/", timeout_s=1)


@pytest.mark.usefixtures("private_refused")
def test_the_local_receiver_is_unreachable_when_private_networks_are_off() -> None:
    with http_receiver() as receiver:
        with pytest.raises(OutboundRefused):
            outbound_request(method="POST", url=receiver.url, content=b"{}", timeout_s=1)
        assert receiver.received == []


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://example.com/", "//no-scheme"])
def test_only_http_and_https(url: str) -> None:
    with pytest.raises(OutboundRefused):
        outbound_request(method="GET", url=url, timeout_s=1)


def test_allowed_to_the_local_receiver_when_the_setting_is_on(settings: Any) -> None:
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = True
    with http_receiver() as receiver:
        receiver.response_body = b'{"received": true}'
        response = outbound_request(
            method="POST",
            url=receiver.url + "?q=1",
            headers={"Content-Type": "application/json", "X-Custom": "yes"},
            content=b'{"a": 1}',
            timeout_s=5,
        )
    assert response.status_code == 200 and response.is_success
    assert response.content == b'{"received": true}' and not response.truncated
    assert response.remote_ip == "127.0.0.1"
    [request] = receiver.received
    assert (request.method, request.path, request.body) == ("POST", "/hooks/in?q=1", b'{"a": 1}')
    assert request.headers["X-Custom"] == "yes"


def test_connects_to_the_checked_address_and_keeps_the_host_name(
    settings: Any, fake_dns: Callable[[str, list[list[str]]], list[str]]
) -> None:
    """DNS rebinding: the second answer (an address nobody listens on) is never asked for."""
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = True
    lookups = fake_dns("hooks.example.test", [["127.0.0.1"], ["10.255.255.1"]])
    with http_receiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        response = outbound_request(method="GET", url=f"http://hooks.example.test:{port}/p", timeout_s=5)
    assert response.status_code == 200
    assert lookups == ["hooks.example.test"]
    assert receiver.received[0].headers["Host"] == f"hooks.example.test:{port}"


def test_a_caller_cannot_override_the_host_header(settings: Any) -> None:
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = True
    with http_receiver() as receiver:
        outbound_request(method="GET", url=receiver.url, headers={"Host": "internal.admin"}, timeout_s=5)
    assert receiver.received[0].headers["Host"].startswith("127.0.0.1:")


def test_redirects_are_returned_not_followed(settings: Any) -> None:
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = True
    with http_receiver(statuses=[302]) as receiver:
        receiver.extra_headers = {"Location": "http://169.254.169.254/latest/meta-data/"}
        response = outbound_request(method="POST", url=receiver.url, content=b"{}", timeout_s=5)
    assert response.status_code == 302 and not response.is_success
    assert response.headers["Location"].startswith("http://169.254.169.254")
    assert len(receiver.received) == 1


def test_the_response_body_is_capped(settings: Any) -> None:
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = True
    with http_receiver() as receiver:
        receiver.response_body = b"x" * 100_000
        response = outbound_request(method="GET", url=receiver.url, timeout_s=5, max_response_bytes=1000)
    assert response.truncated and response.content == b"x" * 1000


def test_a_silent_server_times_out(settings: Any) -> None:
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = True
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepted by the kernel, never answered
        port = listener.getsockname()[1]
        with pytest.raises(OutboundError, match="timed out"):
            outbound_request(method="GET", url=f"http://127.0.0.1:{port}/", timeout_s=0.5)


def test_connection_refused_is_an_outbound_error(settings: Any) -> None:
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = True
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OutboundError):
        outbound_request(method="GET", url=f"http://127.0.0.1:{port}/", timeout_s=2)


def test_an_unknown_name_is_an_outbound_error() -> None:
    with pytest.raises(OutboundError, match="cannot resolve"):
        outbound_request(method="GET", url="https://no-such-host.invalid/", timeout_s=2)


# --- TLS: certificate and SNI checked against the name while connecting to the checked address ---


def _certificate_files(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_file, cert_file, key_file


@contextmanager
def _https_server(cert_file: Path, key_file: Path) -> Iterator[tuple[int, list[str | None]]]:
    server_names: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(204)
            self.end_headers()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], server_names
    finally:
        server.shutdown()
        server.server_close()


def test_https_verifies_the_certificate_for_the_name_and_sends_it_as_sni(
    settings: Any, tmp_path: Path, fake_dns: Callable[[str, list[list[str]]], list[str]]
) -> None:
    ca_file, cert_file, key_file = _certificate_files(tmp_path, "hooks.example.test")
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = True
    settings.OUTBOUND_CA_BUNDLE = str(ca_file)
    fake_dns("hooks.example.test", [["127.0.0.1"]])
    with _https_server(cert_file, key_file) as (port, server_names):
        response = outbound_request(method="GET", url=f"https://hooks.example.test:{port}/", timeout_s=5)
        assert response.status_code == 204 and response.remote_ip == "127.0.0.1"
        assert server_names == ["hooks.example.test"]
        # A name the certificate does not cover fails verification, though it is the same address.
        fake_dns("other.example.test", [["127.0.0.1"]])
        with pytest.raises(OutboundError, match="CERTIFICATE_VERIFY_FAILED"):
            outbound_request(method="GET", url=f"https://other.example.test:{port}/", timeout_s=5)


@pytest.mark.parametrize("value", ["h\u00e9llo", "a\r\nX-Injected: yes"])
def test_invalid_header_values_are_refused_or_fail_without_injecting(settings: Any, value: str) -> None:
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = True
    with http_receiver() as receiver:
        with pytest.raises((OutboundRefused, OutboundError)):
            outbound_request(method="GET", url=receiver.url, headers={"X-Value": value}, timeout_s=2)
    assert all("X-Injected" not in request.headers for request in receiver.received)
