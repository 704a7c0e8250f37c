"""A fake Stripe: an HTTP server on 127.0.0.1 the real `stripe` SDK talks to.

Standard library only. Point the SDK at `fake.api_base` (settings.STRIPE_API_BASE; the meter event
stream's host is the same server, `fake.api_base` too) with any `sk_test_...` key:

    with FakeStripe(webhook_url="http://127.0.0.1:8000/billing/stripe/webhook/", webhook_secret="whsec_x") as fake:
        client = stripe.StripeClient("sk_test_x", base_addresses={"api": fake.api_base})
        customer = client.v1.customers.create(params={"email": "a@example.com"})

Requests are form-encoded as Stripe takes them (`metadata[k]=v`, `line_items[0][price]=...`);
answers are JSON objects shaped like Stripe's (prefixed ids, `object`, `created`, `livemode: false`,
lists with `data`/`has_more`/`url`). Errors: `{"error": {"type", "message", "code", "param"}}`.

Endpoints (v1 unless said): customers (create, retrieve, update, list), products and prices (create,
retrieve, list; a price id the fake never saw is accepted by Checkout as a monthly price when
`strict_prices` is False), checkout/sessions (create, retrieve), billing_portal/sessions (create),
subscriptions (retrieve, update, cancel = DELETE, list), invoices (retrieve, list), billing/meters
(create, list, retrieve), billing/meter_events (create; the same `identifier` twice counts once and
answers the first event), billing/meters/{id}/event_summaries (sum per customer and time range),
v2 billing/meter_event_session and billing/meter_event_stream (JSON, batches of up to 100).

Payment happens on the fake's own pages: a Checkout session's `url` (GET /c/pay/<id>) completes it
(creates the subscription and its first paid invoice, emits the events) and redirects to the
session's success_url; `complete_checkout(id)` does the same from a test. A billing portal
session's `url` (GET /p/session/<id>) shows a page with "Cancel plan" and "Return" buttons.

Events are shaped like Stripe's (`evt_...`, `data.object`, `data.previous_attributes`) and signed
as Stripe signs them: header `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
Delivery to `webhook_url` (when set) is controlled by the test:
- `hold = True` queues events in `pending` instead of sending; `flush(order=...)` sends them (any
  order, e.g. reversed), `deliver(event, duplicate=2, delay_s=..., signature=...)` sends one.
- A delivery answered non-2xx is kept in `undelivered`; `redeliver()` retries them (Stripe retries).
- Every delivery is logged in `deliveries` as (event id, type, HTTP status or 0 when unreachable).
Faults on the API: `fail_next(n, status=500, path_prefix=None)` answers the next n matching requests
with that status (Stripe's SDK retries 5xx and connection errors, reusing the idempotency key).
Idempotency-Key: a repeated POST with the same key answers the first response, as Stripe does.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["FakeStripe", "sign_payload"]

MONTH_S = 30 * 24 * 3600
_INDEX = re.compile(r"\[([^\]]*)\]")


def sign_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send for this body."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def _parse_form(body: str) -> dict[str, Any]:
    """Stripe's form encoding (`a[b][0][c]=v`, `expand[]=x`) into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        head = key.split("[", 1)[0]
        parts = [head, *_INDEX.findall(key[len(head) :])]
        node = root
        for i, part in enumerate(parts[:-1]):
            nxt = parts[i + 1]
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            if nxt == "":
                parts[i + 1] = str(len(child))
            node = child
        else:
            node[parts[-1]] = value
    return _listify(root)  # type: ignore[no-any-return]


def _listify(node: Any) -> Any:
    """`{"0": a, "1": b}` (dict keyed by indices) into `[a, b]`."""
    if isinstance(node, dict):
        if node and all(k.isdigit() for k in node):
            return [_listify(node[k]) for k in sorted(node, key=int)]
        return {k: _listify(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_listify(v) for v in node]
    return node


@dataclass
class _Failure:
    status: int
    path_prefix: str | None


class _StripeError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        content_type = "text/html; charset=utf-8" if isinstance(payload, bytes) else "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", "req_" + secrets.token_hex(7))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        raw = self._body()
        split = urlsplit(self.path)
        path = split.path
        query = _parse_form(split.query)
        if fake.on_request is not None:
            fake.on_request(method, path)
        if path.startswith("/c/pay/") or path.startswith("/p/session/"):
            status, payload, headers = fake._page(method, path, _parse_form(raw.decode()))
            self._send(status, payload, headers)
            return
        failure = fake._take_failure(path)
        if failure is not None:
            fake.requests.append((method, path, failure))
            error = {"error": {"type": "api_error", "message": "Fake Stripe: injected failure"}}
            self._send(failure, error, {"Stripe-Should-Retry": "true"})
            return
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer sk_test_") and not auth.startswith("Bearer ek_test_"):
            fake.requests.append((method, path, 401))
            self._send(401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}})
            return
        if path.startswith("/v2/"):
            params: dict[str, Any] = json.loads(raw or b"{}")
        else:
            params = _parse_form(raw.decode()) if method == "POST" else query
        key = self.headers.get("Idempotency-Key") if method == "POST" else None
        with fake._lock:
            if key and (key, path) in fake._idempotent:
                status, payload = fake._idempotent[(key, path)]
                fake.requests.append((method, path, status))
                self._send(status, payload, {"Idempotent-Replayed": "true"})
                return
            try:
                status, payload = 200, fake._route(method, path, params)
            except _StripeError as exc:
                status = exc.status
                payload = {
                    "error": {
                        "type": "invalid_request_error",
                        "message": exc.message,
                        "code": exc.code,
                        "param": exc.param,
                    }
                }
            if key and status < 500:
                fake._idempotent[(key, path)] = (status, payload)
            fake.requests.append((method, path, status))
        self._send(status, payload)
        fake._send_queued()

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, fake: FakeStripe) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class FakeStripe:
    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        webhook_secret: str = "whsec_test_fake",  # noqa: S107 - a test secret
        strict_prices: bool = False,
    ) -> None:
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.strict_prices = strict_prices
        self.hold = False
        self.clock_offset = 0
        self.objects: dict[str, dict[str, dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []
        self.undelivered: list[dict[str, Any]] = []
        self.deliveries: list[tuple[str, str, int]] = []
        self.requests: list[tuple[str, str, int]] = []
        self.meter_events: dict[str, dict[str, Any]] = {}
        # Called with (method, path) as each API request arrives (on the server's thread).
        self.on_request: Callable[[str, str], None] | None = None
        self._failures: list[_Failure] = []
        self._idempotent: dict[tuple[str, str], tuple[int, Any]] = {}
        self._outbox: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._counter = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeStripe:
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-stripe", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeStripe:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def api_base(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- test controls ---------------------------------------------------------------------------
    def now(self) -> int:
        return int(time.time()) + self.clock_offset

    def fail_next(self, n: int = 1, *, status: int = 500, path_prefix: str | None = None) -> None:
        with self._lock:
            self._failures.extend(_Failure(status, path_prefix) for _ in range(n))

    def get(self, kind: str, object_id: str) -> dict[str, Any]:
        return self.objects[kind][object_id]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return list(self.objects.get(kind, {}).values())

    def price_create(self, price_id: str | None = None, *, unit_amount: int = 2000, interval: str = "month") -> str:
        with self._lock:
            return str(self._price(price_id, unit_amount=unit_amount, interval=interval)["id"])

    def complete_checkout(self, session_id: str) -> dict[str, Any]:
        """Pay a Checkout session: the subscription, its paid invoice and the events. Returns the subscription."""
        with self._lock:
            subscription = self._complete(session_id)
        self._send_queued()
        return subscription

    def subscription_update(self, subscription_id: str, **changes: Any) -> dict[str, Any]:
        """Change a subscription as Stripe would (e.g. status="past_due", price=...) and emit the event."""
        with self._lock:
            subscription = self._subscription_change(subscription_id, changes)
        self._send_queued()
        return subscription

    def invoice_payment_fail(self, subscription_id: str) -> dict[str, Any]:
        """A renewal whose payment fails: an open invoice, invoice.payment_failed, subscription past_due."""
        with self._lock:
            subscription = self.get("subscription", subscription_id)
            invoice = self._invoice(subscription, paid=False)
            self._emit("invoice.finalized", invoice)
            self._emit("invoice.payment_failed", invoice)
            self._subscription_change(subscription_id, {"status": "past_due"})
        self._send_queued()
        return invoice

    def invoice_pay(self, subscription_id: str) -> dict[str, Any]:
        """A renewal that is paid (or a past-due invoice settled): invoice.paid, subscription active."""
        with self._lock:
            subscription = self.get("subscription", subscription_id)
            invoice = self._invoice(subscription, paid=True)
            self._emit("invoice.finalized", invoice)
            self._emit("invoice.paid", invoice)
            if subscription["status"] != "active":
                self._subscription_change(subscription_id, {"status": "active"})
        self._send_queued()
        return invoice

    def subscription_end(self, subscription_id: str) -> dict[str, Any]:
        """The period ends on a subscription set to cancel (or Stripe cancels it): deleted event."""
        with self._lock:
            subscription = self._subscription_delete(subscription_id)
        self._send_queued()
        return subscription

    def event_signed(self, event: dict[str, Any], *, secret: str | None = None) -> tuple[bytes, str]:
        payload = json.dumps(event).encode()
        return payload, sign_payload(payload, secret or self.webhook_secret, self.now())

    def deliver(
        self,
        event: dict[str, Any],
        *,
        duplicate: int = 1,
        delay_s: float = 0.0,
        signature: str | None = None,
        url: str | None = None,
    ) -> list[int]:
        """POST one event (`duplicate` times) to the webhook URL; the statuses (0: unreachable)."""
        if delay_s:
            time.sleep(delay_s)
        statuses = []
        for _ in range(duplicate):
            payload, header = self.event_signed(event)
            statuses.append(
                self._post(url or self.webhook_url, payload, signature if signature is not None else header)
            )
            self.deliveries.append((event["id"], event["type"], statuses[-1]))
            if not 200 <= statuses[-1] < 300 and event not in self.undelivered:
                self.undelivered.append(event)
        return statuses

    def deliver_later(self, event: dict[str, Any], delay_s: float) -> threading.Thread:
        thread = threading.Thread(target=self.deliver, args=(event,), kwargs={"delay_s": delay_s}, daemon=True)
        thread.start()
        return thread

    def flush(self, order: Iterable[int] | str | None = None) -> list[int]:
        """Send the held events: in emission order, "reversed", or by the given indices."""
        with self._lock:
            pending, self.pending = self.pending, []
        if order == "reversed":
            chosen = list(reversed(pending))
        elif order is None:
            chosen = pending
        else:
            chosen = [pending[int(i)] for i in order]
        return [status for event in chosen for status in self.deliver(event)]

    def redeliver(self) -> list[int]:
        undelivered, self.undelivered = self.undelivered, []
        return [status for event in undelivered for status in self.deliver(event)]

    def events_of(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == event_type]

    # -- internals -------------------------------------------------------------------------------
    def _post(self, url: str | None, payload: bytes, signature: str) -> int:
        if not url:
            return 0
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }
        if signature:
            headers["Stripe-Signature"] = signature
        request = urllib.request.Request(url, data=payload, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError):
            return 0

    def _send_queued(self) -> None:
        """Deliver events emitted by the last action, outside the state lock, in order.

        While one thread delivers, another's events wait in the outbox for it: the platform's
        webhook handler calls the API back, and waiting here for the delivery that waits on that
        call held each such webhook until its 30 s timeout."""
        while self._send_lock.acquire(blocking=False):
            try:
                with self._lock:
                    outbox, self._outbox = self._outbox, []
                    if self.hold or not self.webhook_url:
                        self.pending.extend(outbox)
                        return
                for event in outbox:
                    self.deliver(event)
            finally:
                self._send_lock.release()
            with self._lock:
                if not self._outbox:
                    return

    def _take_failure(self, path: str) -> int | None:
        with self._lock:
            for i, failure in enumerate(self._failures):
                if failure.path_prefix is None or path.startswith(failure.path_prefix):
                    del self._failures[i]
                    return failure.status
        return None

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{secrets.token_hex(6)}{next(self._counter):04d}"

    def _store(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects.setdefault(kind, {})[obj["id"]] = obj
        return obj

    def _find(self, kind: str, object_id: str, param: str = "id") -> dict[str, Any]:
        try:
            return self.objects[kind][object_id]
        except KeyError:
            raise _StripeError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param) from None

    def _emit(self, event_type: str, obj: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"object": json.loads(json.dumps(obj))}
        if previous is not None:
            data["previous_attributes"] = previous
        event = {
            "id": self._id("evt"),
            "object": "event",
            "api_version": "2026-08-26.dahlia",
            "created": self.now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        self.events.append(event)
        self._outbox.append(event)
        return event

    def _list(self, items: list[dict[str, Any]], params: dict[str, Any], url: str) -> dict[str, Any]:
        items = sorted(items, key=lambda o: (o.get("created", 0), o["id"]), reverse=True)
        after = params.get("starting_after")
        if after:
            ids = [o["id"] for o in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        limit = min(max(int(params.get("limit") or 10), 1), 100)
        return {"object": "list", "data": items[:limit], "has_more": len(items) > limit, "url": url}

    def _price(self, price_id: str | None, *, unit_amount: int = 2000, interval: str = "month") -> dict[str, Any]:
        if price_id and price_id in self.objects.get("price", {}):
            return self.objects["price"][price_id]
        product = self._store(
            "product",
            {
                "id": self._id("prod"),
                "object": "product",
                "active": True,
                "created": self.now(),
                "livemode": False,
                "metadata": {},
                "name": price_id or "Fake product",
            },
        )
        return self._store(
            "price",
            {
                "id": price_id or self._id("price"),
                "object": "price",
                "active": True,
                "billing_scheme": "per_unit",
                "created": self.now(),
                "currency": "usd",
                "livemode": False,
                "lookup_key": None,
                "metadata": {},
                "nickname": None,
                "product": product["id"],
                "type": "recurring",
                "unit_amount": unit_amount,
                "recurring": {"interval": interval, "interval_count": 1, "usage_type": "licensed", "meter": None},
            },
        )

    def _route(self, method: str, path: str, params: dict[str, Any]) -> Any:  # noqa: PLR0911, PLR0912 - one table of routes
        parts = path.strip("/").split("/")
        if parts[0] == "v2":
            return self._route_v2(method, parts[1:], params)
        if parts[0] != "v1":
            raise _StripeError(404, f"Unrecognized request URL ({method}: {path})")
        p = parts[1:]
        if p == ["account"] or (len(p) == 2 and p[0] == "accounts"):
            return self._account()
        if p == ["customers"]:
            return (
                self._customer_create(params)
                if method == "POST"
                else self._list(
                    [c for c in self.all("customer") if not params.get("email") or c["email"] == params["email"]],
                    params,
                    "/v1/customers",
                )
            )
        if len(p) == 2 and p[0] == "customers":
            customer = self._find("customer", p[1])
            if method == "POST":
                customer.update({k: v for k, v in params.items() if k in ("email", "name", "description")})
                customer["metadata"].update(params.get("metadata") or {})
            return customer
        if p == ["products"] and method == "POST":
            return self._store(
                "product",
                {
                    "id": params.get("id") or self._id("prod"),
                    "object": "product",
                    "active": True,
                    "created": self.now(),
                    "livemode": False,
                    "metadata": params.get("metadata") or {},
                    "name": params.get("name", ""),
                },
            )
        if p == ["products"]:
            return self._list(self.all("product"), params, "/v1/products")
        if len(p) == 3 and p[0] == "products" and p[2] == "features":
            self._find("product", p[1])
            return self._list([], params, f"/v1/products/{p[1]}/features")
        if len(p) == 2 and p[0] in ("products", "prices"):
            return self._find(p[0][:-1], p[1])
        if p == ["prices"] and method == "POST":
            price = self._price(
                None,
                unit_amount=int(params.get("unit_amount") or 0),
                interval=(params.get("recurring") or {}).get("interval", "month"),
            )
            price.update({"lookup_key": params.get("lookup_key"), "metadata": params.get("metadata") or {}})
            if params.get("product"):
                price["product"] = params["product"]
            return price
        if p == ["prices"]:
            return self._list(self.all("price"), params, "/v1/prices")
        if p == ["checkout", "sessions"] and method == "POST":
            return self._checkout_create(params)
        if len(p) == 3 and p[:2] == ["checkout", "sessions"]:
            return self._find("checkout.session", p[2])
        if p == ["billing_portal", "sessions"] and method == "POST":
            customer = self._find("customer", str(params.get("customer")), "customer")
            session_id = self._id("bps")
            return self._store(
                "billing_portal.session",
                {
                    "id": session_id,
                    "object": "billing_portal.session",
                    "created": self.now(),
                    "customer": customer["id"],
                    "livemode": False,
                    "return_url": params.get("return_url"),
                    "url": f"{self.api_base}/p/session/{session_id}",
                },
            )
        if p == ["subscriptions"] and method == "GET":
            subs = [
                s for s in self.all("subscription") if not params.get("customer") or s["customer"] == params["customer"]
            ]
            if params.get("status") and params["status"] != "all":
                subs = [s for s in subs if s["status"] == params["status"]]
            return self._list(subs, params, "/v1/subscriptions")
        if len(p) == 2 and p[0] == "subscriptions":
            subscription = self._find("subscription", p[1])
            if method == "DELETE":
                return self._subscription_delete(p[1])
            if method == "POST":
                changes: dict[str, Any] = {}
                if "cancel_at_period_end" in params:
                    changes["cancel_at_period_end"] = params["cancel_at_period_end"] == "true"
                if params.get("items"):
                    changes["price"] = params["items"][0].get("price")
                if "metadata" in params:
                    changes["metadata"] = params["metadata"]
                return self._subscription_change(p[1], changes)
            return subscription
        if p == ["invoices"]:
            invoices = [
                i
                for i in self.all("invoice")
                if (not params.get("customer") or i["customer"] == params["customer"])
                and (not params.get("subscription") or i["subscription"] == params["subscription"])
            ]
            return self._list(invoices, params, "/v1/invoices")
        if len(p) == 2 and p[0] == "invoices":
            return self._find("invoice", p[1])
        if p[:2] == ["billing", "meters"]:
            return self._route_meters(method, p[2:], params)
        if p == ["billing", "meter_events"] and method == "POST":
            return self._meter_event(params)
        raise _StripeError(404, f"Unrecognized request URL ({method}: {path})")

    def _route_meters(self, method: str, p: list[str], params: dict[str, Any]) -> Any:
        if not p and method == "POST":
            for field in ("display_name", "event_name"):
                if not params.get(field):
                    raise _StripeError(400, f"Missing required param: {field}.", param=field)
            if any(
                m["event_name"] == params["event_name"] and m["status"] == "active" for m in self.all("billing.meter")
            ):
                raise _StripeError(400, "An active meter with this event_name already exists.", param="event_name")
            return self._store(
                "billing.meter",
                {
                    "id": self._id("mtr"),
                    "object": "billing.meter",
                    "created": self.now(),
                    "livemode": False,
                    "display_name": params["display_name"],
                    "event_name": params["event_name"],
                    "status": "active",
                    "default_aggregation": params.get("default_aggregation") or {"formula": "sum"},
                    "customer_mapping": params.get("customer_mapping")
                    or {"event_payload_key": "stripe_customer_id", "type": "by_id"},
                    "value_settings": params.get("value_settings") or {"event_payload_key": "value"},
                    "event_time_window": None,
                    "updated": self.now(),
                },
            )
        if not p:
            return self._list(self.all("billing.meter"), params, "/v1/billing/meters")
        meter = self._find("billing.meter", p[0])
        if len(p) == 2 and p[1] == "event_summaries":
            for field in ("customer", "start_time", "end_time"):
                if not params.get(field):
                    raise _StripeError(400, f"Missing required param: {field}.", param=field)
            start, end = int(params["start_time"]), int(params["end_time"])
            customer_key = meter["customer_mapping"].get("event_payload_key", "stripe_customer_id")
            value_key = meter["value_settings"].get("event_payload_key", "value")
            total = sum(
                float(e["payload"].get(value_key, 0))
                for e in self.meter_events.values()
                if e["event_name"] == meter["event_name"]
                and e["payload"].get(customer_key) == params["customer"]
                and start <= e["timestamp"] < end
            )
            summary = {
                "id": self._id("mtrusg"),
                "object": "billing.meter_event_summary",
                "aggregated_value": total,
                "start_time": start,
                "end_time": end,
                "livemode": False,
                "meter": meter["id"],
            }
            return {
                "object": "list",
                "data": [summary],
                "has_more": False,
                "url": f"/v1/billing/meters/{meter['id']}/event_summaries",
            }
        return meter

    def _meter_event(self, params: dict[str, Any]) -> dict[str, Any]:
        for field in ("event_name", "payload"):
            if not params.get(field):
                raise _StripeError(400, f"Missing required param: {field}.", param=field)
        identifier = str(params.get("identifier") or self._id("mev"))
        if identifier in self.meter_events:
            return self.meter_events[identifier]  # deduplicated: counts once
        event = {
            "object": "billing.meter_event",
            "created": self.now(),
            "event_name": params["event_name"],
            "identifier": identifier,
            "livemode": False,
            "payload": dict(params["payload"]),
            "timestamp": int(params.get("timestamp") or self.now()),
        }
        self.meter_events[identifier] = event
        return event

    def _route_v2(self, method: str, p: list[str], params: dict[str, Any]) -> Any:
        if p == ["billing", "meter_event_session"] and method == "POST":
            return {
                "id": self._id("mes"),
                "object": "v2.billing.meter_event_session",
                "authentication_token": "ek_test_" + secrets.token_hex(12),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.now())),
                "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.now() + 900)),
                "livemode": False,
            }
        if p == ["billing", "meter_event_stream"] and method == "POST":
            events = params.get("events") or []
            if not 1 <= len(events) <= 100:
                raise _StripeError(400, "events must hold between 1 and 100 events", param="events")
            for event in events:
                stamp = event.get("timestamp")
                seconds = (
                    int(time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone)
                    if isinstance(stamp, str)
                    else stamp
                )
                self._meter_event({**event, "timestamp": seconds})
            return {}
        raise _StripeError(404, f"Unrecognized request URL ({method}: /v2/{'/'.join(p)})")

    def _account(self) -> dict[str, Any]:
        """The platform's own account (dj-stripe reads it to know who owns the objects)."""
        return {
            "id": "acct_fakestripe0001",
            "object": "account",
            "business_type": "company",
            "business_profile": {"name": "CognitionOS (fake)", "url": None, "support_email": None},
            "charges_enabled": True,
            "payouts_enabled": True,
            "country": "US",
            "created": 1_700_000_000,
            "default_currency": "usd",
            "details_submitted": True,
            "email": "billing@example.com",
            "metadata": {},
            "settings": {"dashboard": {"display_name": "CognitionOS (fake)", "timezone": "Etc/UTC"}},
            "type": "standard",
            "livemode": False,
        }

    def _customer_create(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._store(
            "customer",
            {
                "id": self._id("cus"),
                "object": "customer",
                "created": self.now(),
                "livemode": False,
                "email": params.get("email"),
                "name": params.get("name"),
                "description": params.get("description"),
                "metadata": params.get("metadata") or {},
                "currency": None,
                "delinquent": False,
                "balance": 0,
                "invoice_settings": {"default_payment_method": None},
                "deleted": False,
            },
        )

    def _checkout_create(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("mode") != "subscription":
            raise _StripeError(400, "The fake supports mode=subscription only.", param="mode")
        if not params.get("success_url"):
            raise _StripeError(400, "Missing required param: success_url.", param="success_url")
        items = params.get("line_items") or []
        if not items or not items[0].get("price"):
            raise _StripeError(400, "Missing required param: line_items[0][price].", param="line_items")
        price_id = items[0]["price"]
        if price_id not in self.objects.get("price", {}):
            if self.strict_prices:
                raise _StripeError(
                    400, f"No such price: '{price_id}'", code="resource_missing", param="line_items[0][price]"
                )
            self._price(price_id)
        customer = params.get("customer")
        if customer:
            self._find("customer", customer, "customer")
        session_id = self._id("cs_test")
        return self._store(
            "checkout.session",
            {
                "id": session_id,
                "object": "checkout.session",
                "created": self.now(),
                "livemode": False,
                "mode": "subscription",
                "status": "open",
                "payment_status": "unpaid",
                "customer": customer,
                "client_reference_id": params.get("client_reference_id"),
                "metadata": params.get("metadata") or {},
                "success_url": params["success_url"],
                "cancel_url": params.get("cancel_url"),
                "subscription": None,
                "url": f"{self.api_base}/c/pay/{session_id}",
                "expires_at": self.now() + 24 * 3600,
                "line_items_price": price_id,
                "quantity": int(items[0].get("quantity") or 1),
                "subscription_metadata": (params.get("subscription_data") or {}).get("metadata") or {},
            },
        )

    def _complete(self, session_id: str) -> dict[str, Any]:
        session = self._find("checkout.session", session_id)
        if session["status"] == "complete":
            return self.get("subscription", session["subscription"])
        if not session["customer"]:
            session["customer"] = self._customer_create({"metadata": {}})["id"]
        price = self._price(session["line_items_price"])
        now = self.now()
        subscription = self._store(
            "subscription",
            {
                "id": self._id("sub"),
                "object": "subscription",
                "created": now,
                "livemode": False,
                "customer": session["customer"],
                "status": "active",
                "cancel_at_period_end": False,
                "cancel_at": None,
                "canceled_at": None,
                "ended_at": None,
                "start_date": now,
                "trial_end": None,
                "trial_start": None,
                "collection_method": "charge_automatically",
                "currency": "usd",
                "latest_invoice": None,
                "metadata": dict(session["subscription_metadata"]),
                "current_period_start": now,
                "current_period_end": now + MONTH_S,
                "items": {
                    "object": "list",
                    "has_more": False,
                    "url": "/v1/subscription_items",
                    "data": [
                        {
                            "id": self._id("si"),
                            "object": "subscription_item",
                            "created": now,
                            "price": price,
                            "quantity": session["quantity"],
                            "current_period_start": now,
                            "current_period_end": now + MONTH_S,
                            "metadata": {},
                        }
                    ],
                },
            },
        )
        subscription["items"]["data"][0]["subscription"] = subscription["id"]
        invoice = self._invoice(subscription, paid=True)
        session.update({"status": "complete", "payment_status": "paid", "subscription": subscription["id"]})
        self._emit("customer.subscription.created", subscription)
        self._emit("invoice.finalized", invoice)
        self._emit("invoice.paid", invoice)
        self._emit("checkout.session.completed", session)
        return subscription

    def _invoice(self, subscription: dict[str, Any], *, paid: bool) -> dict[str, Any]:
        price = subscription["items"]["data"][0]["price"]
        amount = int(price.get("unit_amount") or 0) * int(subscription["items"]["data"][0]["quantity"])
        invoice_id = self._id("in")
        invoice = self._store(
            "invoice",
            {
                "id": invoice_id,
                "object": "invoice",
                "created": self.now(),
                "livemode": False,
                "customer": subscription["customer"],
                "subscription": subscription["id"],
                "parent": {
                    "type": "subscription_details",
                    "subscription_details": {"subscription": subscription["id"], "metadata": {}},
                },
                "status": "paid" if paid else "open",
                "paid": paid,
                "currency": "usd",
                "amount_due": amount,
                "amount_paid": amount if paid else 0,
                "amount_remaining": 0 if paid else amount,
                "total": amount,
                "number": f"FAKE-{len(self.objects.get('invoice', {})) + 1:04d}",
                "period_start": subscription["current_period_start"],
                "period_end": subscription["current_period_end"],
                "hosted_invoice_url": f"{self.api_base}/i/{invoice_id}",
                "invoice_pdf": f"{self.api_base}/i/{invoice_id}/pdf",
                "attempt_count": 1,
                "next_payment_attempt": None if paid else self.now() + 3 * 24 * 3600,
            },
        )
        subscription["latest_invoice"] = invoice["id"]
        return invoice

    def _subscription_change(self, subscription_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        subscription = self._find("subscription", subscription_id)
        previous: dict[str, Any] = {}
        if "price" in changes:
            item = subscription["items"]["data"][0]
            previous["items"] = json.loads(json.dumps(subscription["items"]))
            item["price"] = self._price(changes.pop("price"))
        if "cancel_at_period_end" in changes:
            previous["cancel_at_period_end"] = subscription["cancel_at_period_end"]
            subscription["cancel_at_period_end"] = changes["cancel_at_period_end"]
            subscription["cancel_at"] = (
                subscription["current_period_end"] if changes.pop("cancel_at_period_end") else None
            )
        for key, value in changes.items():
            previous[key] = subscription.get(key)
            subscription[key] = value
        self._emit("customer.subscription.updated", subscription, previous)
        return subscription

    def _subscription_delete(self, subscription_id: str) -> dict[str, Any]:
        subscription = self._find("subscription", subscription_id)
        if subscription["status"] != "canceled":
            subscription.update({"status": "canceled", "canceled_at": self.now(), "ended_at": self.now()})
            self._emit("customer.subscription.deleted", subscription)
        return subscription

    def _page(self, method: str, path: str, form: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        """The fake's hosted pages: Checkout pays on visit; the billing portal offers cancel and return."""
        parts = path.strip("/").split("/")
        with self._lock:
            if parts[0] == "c":
                session = self.objects.get("checkout.session", {}).get(parts[-1])
                if session is None:
                    return 404, b"<h1>No such Checkout session</h1>", {}
                self._complete(session["id"])
                target = str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session["id"])
            else:
                portal = self.objects.get("billing_portal.session", {}).get(parts[-1])
                if portal is None:
                    return 404, b"<h1>No such billing portal session</h1>", {}
                subs = [
                    s
                    for s in self.all("subscription")
                    if s["customer"] == portal["customer"] and s["status"] != "canceled"
                ]
                if method == "POST" and form.get("action") == "cancel" and subs:
                    self._subscription_change(subs[0]["id"], {"cancel_at_period_end": True})
                    target = str(portal["return_url"])
                elif method == "POST":
                    target = str(portal["return_url"])
                else:
                    state = (
                        ", ".join(
                            f"{escape(s['id'])}: {escape(s['status'])}"
                            + (" (cancels at period end)" if s["cancel_at_period_end"] else "")
                            for s in subs
                        )
                        or "no subscription"
                    )
                    page = (
                        "<!doctype html><html><head><title>Fake Stripe billing portal</title></head><body>"
                        f"<h1>Billing portal</h1><p>Subscriptions: {state}</p>"
                        '<form method="post"><button name="action" value="cancel">Cancel plan</button></form>'
                        '<form method="post"><button name="action" value="return">Return</button></form>'
                        "</body></html>"
                    )
                    return 200, page.encode(), {}
        self._send_queued()
        return int(HTTPStatus.SEE_OTHER), b"", {"Location": target}
