"""CPU time per gateway request through the whole Django application (middleware, key, limits,
budgets, ledger, caches), called in this process from one thread: no web server, no client, no
other request. On a shared machine whose speed moves by a third within minutes, this is the
steadiest figure of what a change to the request path costs; bench/gateway.py measures the same
requests under load, with the server's threads competing.

    .venv/bin/python bench/request_cpu.py [--cases hit,miss] [--requests 3000] [--rounds 5]
                                          [--profile [--sort cumulative]]

`submit` sends a job to the jobs API (POST /api/v1/jobs) with no worker running it: the
submission's own cost. Each round prints CPU and wall time per request; the CPU includes this
process's other threads (the batch writers, and on a miss the fake provider's server). Compare
the lowest rounds of two runs made one after the other. `--profile` prints cProfile's top functions by CPU time instead.
Not a test: compare within one sitting.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._setup import queue_purge  # noqa: E402 - after the path is set
from bench.gateway import BODIES, setup  # noqa: E402

# Each case's path: the gateway's chat completions, or a job submitted through the jobs API.
PATHS = {"hit": "/v1/chat/completions", "miss": "/v1/chat/completions", "submit": "/api/v1/jobs"}
JOB = {"prompt": "Benchmark question", "model": "gpt-4o-mini", "max_tokens": 32}
QUEUE = "cognitionos-bench-request-cpu"


def requester(
    application: Callable[..., Iterable[bytes]], key: str, body: dict[str, Any], path: str
) -> Callable[[], str]:
    """A function that sends one request to the WSGI application and returns its status line."""
    raw = json.dumps(body).encode()
    answered: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
        answered.append(status)

    def send() -> str:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "HTTP_HOST": "localhost",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(raw)),
            "HTTP_AUTHORIZATION": f"Bearer {key}",
            "wsgi.input": io.BytesIO(raw),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
        }
        response = application(environ, start_response)
        b"".join(response)
        response.close()  # type: ignore[attr-defined] # Django's responses have it: request_finished
        return answered.pop()

    return send


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cases", default="hit,miss", help="hit, miss (cache skipped), submit (a job, no worker), comma-separated"
    )
    parser.add_argument("--requests", type=int, default=3000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile one round (CPU clock) instead")
    parser.add_argument("--sort", default="tottime", help="with --profile: pstats' order (tottime, cumulative)")
    args = parser.parse_args()
    if not set(args.cases.split(",")) <= set(PATHS):  # a fill needs a new prompt per request
        parser.error(f"--cases takes {', '.join(PATHS)}")
    os.environ["DEBUG"] = "false"  # development settings keep every query in memory when DEBUG is on
    # The submitted jobs' run messages go to a queue of their own, emptied at the end: no worker runs them.
    os.environ["CELERY_TASK_DEFAULT_QUEUE"] = QUEUE
    key, _ = setup(max_concurrent_jobs=2_000_000_000)
    from django.conf import settings

    from tests.support.fake_provider import FakeProvider

    fake = FakeProvider().start()
    settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = "sk-bench", fake.openai_base_url
    from cognitionos.wsgi import application

    try:
        for case in args.cases.split(","):
            send = requester(application, key, JOB if case == "submit" else BODIES[case], PATHS[case])
            for _ in range(300):  # warm-up: imports, pools, the caches filled
                status = send()
            if not status.startswith(("200", "201", "202")):
                raise SystemExit(f"{case}: the warm-up was answered {status}")
            if args.profile:
                profile = cProfile.Profile(time.process_time)
                profile.enable()
                for _ in range(args.requests):
                    send()
                profile.disable()
                print(f"== {case}: {args.requests} requests, by CPU time")
                pstats.Stats(profile).sort_stats(args.sort).print_stats(40)
                continue
            for _ in range(args.rounds):
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(args.requests):
                    send()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                print(
                    f"{case:>4}: {cpu / args.requests * 1e6:7.1f} us CPU per request   "
                    f"{wall / args.requests * 1e6:7.1f} us wall   ({args.requests} requests, one thread)",
                    flush=True,
                )
    finally:
        fake.stop()
        queue_purge(QUEUE)


if __name__ == "__main__":
    main()
