"""Playground figure (issue 12): time to the first streamed token through the portal's playground
endpoint against through /v1 directly, on the same server and the same fake provider.

    .venv/bin/python bench/portal_playground.py [--samples 200] [--rate 10] [--warmup 20]

Starts the production web server (cognitionos.web, 2 processes x 8 threads unless WEB_PROCESSES /
WEB_THREADS say otherwise) on its own database in the bench servers (.data/bench), with the fake
provider (tests/support/fake_provider.py, no added latency) as the platform's OpenAI. Then offers
requests at a fixed rate (open loop: each starts on schedule, whether or not the ones before have
ended), alternating the two ways in:

- /v1/chat/completions with `stream: true` and an API key (the platform host);
- /playground/run/ on the organization's host, as the signed-in member (session cookie and CSRF
  token, the form the page posts).

Every request asks a different question, so every one is a cache miss that reaches the provider.
Time to first token: from sending the request to reading the first chunk that carries answer text
(an OpenAI `data:` chunk with delta content; the playground's `event: delta`), measured by a plain
HTTP/1.1 client on its own connection per request. Prints p50 and p95 of each and their difference;
goal: at most 5 ms apart. Not a test: compare within one run; on a busy machine the absolute figures
mean little.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._setup import django_on_fresh_database, unthrottled_plan, web_start, web_stop  # noqa: E402 - after the path is set

PORT = 18341
SLUG = "playground"
MAX_TOKENS = 64


@dataclass(frozen=True)
class Target:
    """One way in: everything needed to send its request."""

    name: str
    host: str
    path: str
    headers: dict[str, str]
    content_type: str
    marker: bytes  # what the first chunk with answer text starts with


@dataclass(frozen=True)
class Sample:
    target: str
    first_token_s: float | None  # None: failed
    status: int
    error: str = ""


def setup() -> tuple[list[Target], dict[str, str]]:
    """A fresh organization with a key and a member (signed in: a session in the database that the
    server reads), limits and a budget far above what the run can use."""
    django_on_fresh_database("cognitionos_bench_playground")
    from decimal import Decimal

    from django.conf import settings
    from django.test import Client

    from apps.accounts.models import User
    from apps.accounts.principals import Principal
    from apps.apikeys.services import apikey_create
    from apps.llm.services import budget_set
    from apps.rbac.models import Membership, Role
    from apps.tenants.services import organization_create

    actor = Principal.system("bench")
    unthrottled_plan()
    organization = organization_create(
        slug=SLUG, name="Playground bench", owner_email="bench@example.com", plan_code="bench", actor=actor
    )
    budget_set(
        organization=organization, scope="organization", period="day", limit_usd=Decimal(100000), hard=True, actor=actor
    )
    key = apikey_create(organization=organization, name="bench", actor=actor).key
    member = User.objects.create_user(email="member@playground-bench.example")
    Membership.objects.create(organization=organization, user=member, role=Role.DEVELOPER)
    portal_host = f"{SLUG}.{settings.BASE_DOMAIN}"
    browser = Client(HTTP_HOST=portal_host)
    browser.force_login(member)
    page = browser.get("/playground/")  # sets the CSRF cookie, as the page does for its script
    assert page.status_code == 200, page.status_code
    session = browser.cookies[settings.SESSION_COOKIE_NAME].value
    csrf = browser.cookies[settings.CSRF_COOKIE_NAME].value
    targets = [
        Target(
            name="/v1/chat/completions",
            host=settings.BASE_DOMAIN,
            path="/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            content_type="application/json",
            marker=b'data: {"id"',
        ),
        Target(
            name="/playground/run/",
            host=portal_host,
            path="/playground/run/",
            headers={
                "Cookie": f"{settings.SESSION_COOKIE_NAME}={session}; {settings.CSRF_COOKIE_NAME}={csrf}",
                "X-CSRFToken": csrf,
            },
            content_type="application/x-www-form-urlencoded",
            marker=b"event: delta",
        ),
    ]
    env = {**os.environ, "LOG_LEVEL": "WARNING", "DEBUG": "false", "DATABASE_POOL_MAX_SIZE": "10"}
    return targets, env


def body(target: Target, question: str) -> bytes:
    if target.content_type == "application/json":
        return json.dumps(
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": question}],
                "max_tokens": MAX_TOKENS,
                "temperature": 1,
                "top_p": 1,
                "stream": True,
            }
        ).encode()
    form = {
        "model": "gpt-4o-mini",
        "system": "",
        "role": "user",
        "content": question,
        "max_tokens": str(MAX_TOKENS),
        "temperature": "1",
        "top_p": "1",
        "seed": "",
    }
    return urllib.parse.urlencode(form).encode()


def _has_text(line: bytes, target: Target) -> bool:
    """A chunk that carries answer text (the first /v1 chunk is the role alone, with empty content)."""
    if target.marker == b"event: delta":
        return line.startswith(b"event: delta")
    if not line.startswith(b"data: {"):
        return False
    chunk = json.loads(line[6:])
    return any((choice.get("delta") or {}).get("content") for choice in chunk.get("choices") or ())


def first_token(target: Target, question: str) -> Sample:
    """Send one request on a new connection; the time to the first chunk with answer text. The
    rest of the answer is read to its end (the server settles the call when the stream ends)."""
    payload = body(target, question)
    head = (
        f"POST {target.path} HTTP/1.1\r\nHost: {target.host}:{PORT}\r\nContent-Type: {target.content_type}\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in target.headers.items())
        + "\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", PORT), timeout=30) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = connection.makefile("rb")
        started = time.perf_counter()
        connection.sendall(head + payload)
        status_line = reader.readline()
        status = int(status_line.split()[1]) if status_line else 0
        if status != 200:
            return Sample(target.name, None, status, reader.read(300).decode(errors="replace"))
        elapsed = None
        for line in reader:  # chunked framing lines interleave; the event lines are what matter
            if elapsed is None and _has_text(line.strip(), target):
                elapsed = time.perf_counter() - started
        return Sample(target.name, elapsed, status, "" if elapsed is not None else "no text chunk")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def offer(targets: list[Target], *, count: int, rate: float, tag: str) -> list[Sample]:
    """`count` requests per target at `rate` requests per second in all, alternating targets, each
    started on schedule in its own thread (open loop)."""
    interval = 1.0 / rate
    futures: list[Future[Sample]] = []
    with ThreadPoolExecutor(max_workers=64) as pool:
        start = time.perf_counter()
        for n in range(count * len(targets)):
            # Alternate, and swap the order every round, so neither target always goes first.
            round_number, index = divmod(n, len(targets))
            target = targets[index if round_number % 2 == 0 else len(targets) - 1 - index]
            delay = start + n * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(first_token, target, f"{tag} question {n}: how are you?"))
        return [future.result() for future in futures]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200, help="Requests measured per way in")
    parser.add_argument("--rate", type=float, default=10.0, help="Requests per second offered, both ways in together")
    parser.add_argument("--warmup", type=int, default=20, help="Requests per way in before measuring")
    args = parser.parse_args()
    targets, env = setup()
    from tests.support.fake_provider import FakeProvider

    fake = FakeProvider().start()
    env.update(OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=fake.openai_base_url)
    server = web_start(port=PORT, env=env)
    try:
        offer(targets, count=args.warmup, rate=args.rate, tag="warm-up")
        samples = offer(targets, count=args.samples, rate=args.rate, tag="measured")
    finally:
        web_stop(server)
        fake.stop()
    processes, threads = os.environ.get("WEB_PROCESSES", "2"), os.environ.get("WEB_THREADS", "8")
    print(
        f"Time to first streamed token, web server {processes}x{threads}, fake provider (no added latency), "
        f"{args.rate:g} requests/s offered alternating the two, {args.samples} each after {args.warmup} warm-up, "
        "every request a cache miss:"
    )
    figures: dict[str, tuple[float, float]] = {}
    for target in targets:
        mine = [s for s in samples if s.target == target.name]
        times = [s.first_token_s for s in mine if s.first_token_s is not None]
        failed = [s for s in mine if s.first_token_s is None]
        if not times:
            print(f"  {target.name:22} every request failed: {failed[0].status} {failed[0].error[:200]}")
            continue
        figures[target.name] = (percentile(times, 0.5) * 1e3, percentile(times, 0.95) * 1e3)
        p50, p95 = figures[target.name]
        extra = f"   failed {len(failed)} (first: {failed[0].status} {failed[0].error[:120]!r})" if failed else ""
        print(
            f"  {target.name:22} p50 {p50:7.2f} ms   p95 {p95:7.2f} ms   mean {statistics.fmean(times) * 1e3:7.2f} ms"
            f"   n={len(times)}{extra}"
        )
    if len(figures) == 2:
        (v1_50, v1_95), (pg_50, pg_95) = figures["/v1/chat/completions"], figures["/playground/run/"]
        print(
            f"  playground - /v1        p50 {pg_50 - v1_50:+7.2f} ms   p95 {pg_95 - v1_95:+7.2f} ms"
            "   (goal: at most 5 ms apart)"
        )
        # Requests offered one after the other (100 ms apart at 10/s) saw nearly the same machine:
        # the median of their differences is steadier than the difference of two medians.
        by_target: dict[str, list[float | None]] = {t.name: [] for t in targets}
        for sample in samples:
            by_target[sample.target].append(sample.first_token_s)
        pairs = [
            (portal - api) * 1e3
            for api, portal in zip(by_target["/v1/chat/completions"], by_target["/playground/run/"], strict=True)
            if api is not None and portal is not None
        ]
        print(
            f"  paired (adjacent requests): median difference {statistics.median(pairs):+.2f} ms"
            f" over {len(pairs)} pairs"
        )


if __name__ == "__main__":
    main()
