"""A real HTTP receiver on 127.0.0.1, in a thread, that records what it gets and checks signatures."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from apps.webhooks.signing import SIGNATURE_HEADER, WebhookSignatureError, webhook_signature_verify


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool | None  # None: no secret to check against


@dataclass
class Receiver:
    url: str = ""
    secret: str | None = None
    # Status codes to answer with, in order; the last one repeats. An unset list answers 200.
    statuses: list[int] = field(default_factory=list)
    extra_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b"ok"
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    def next_status(self) -> int:
        if not self.statuses:
            return 200
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.received) >= count, timeout=timeout)
            return list(self.received)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            signature_ok: bool | None = None
            if receiver.secret is not None:
                try:
                    webhook_signature_verify(receiver.secret, self.headers.get(SIGNATURE_HEADER), body)
                    signature_ok = True
                except WebhookSignatureError:
                    signature_ok = False
            with receiver.arrived:
                status = receiver.next_status()
                receiver.received.append(
                    Received(self.command, self.path, dict(self.headers.items()), body, signature_ok)
                )
                receiver.arrived.notify_all()
            if signature_ok is False:
                status = 400
            self.send_response(status)
            for name, value in receiver.extra_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(receiver.response_body)))
            self.end_headers()
            self.wfile.write(receiver.response_body)

        do_POST = _handle
        do_GET = _handle
        do_PUT = _handle

    return Handler


@contextmanager
def http_receiver(*, secret: str | None = None, statuses: list[int] | None = None) -> Iterator[Receiver]:
    receiver = Receiver(secret=secret, statuses=list(statuses or []))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/in"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
