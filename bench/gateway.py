"""Gateway throughput: requests per second and latency at 32 concurrent clients, with keys, rate
limits, budgets and the ledger on, on a cache miss (caches skipped), on a cache fill (each request a
new prompt: the exact caches looked up, the durable one too, then filled) and on a cache hit; and
the CPU time per request of the web processes, PostgreSQL, Redis and this process (the fake provider).

    .venv/bin/python bench/gateway.py [--seconds 10] [--server granian|gunicorn|both] [--rounds 1]
                                      [--cases miss,fill,hit]

Starts the web server (Granian as the product runs it, cognitionos/web.py, or gunicorn gthread at
the same 2 processes x 8 threads; WEB_PROCESSES / WEB_THREADS change both) on its own database in
the bench servers (.data/bench) and drives it with wrk (Debian package `wrk`; installed here if
missing). The provider is the fake server at 0 ms latency. `--server both` measures the two side
by side in one run, in alternating order each round (gunicorn first in odd rounds, Granian first
in even ones), and prints every figure and the ratios. Not a test: compare within one run.

wrk counts a request's latency only once it is answered: a connection the server never serves
shows in no latency figure. Each line therefore also prints the connections in service, the
answered rate times the mean latency (Little's law): 32 when every connection is being served,
fewer when some wait unanswered, and then the latencies flatter the server.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._setup import (  # noqa: E402 - after the path is set
    SERVERS,
    CpuMeter,
    django_on_fresh_database,
    process_tree,
    unthrottled_plan,
    web_start,
    web_stop,
)

PORT = 18321
CONNECTIONS = 32


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or "wrk"


def setup(**limits: int) -> tuple[str, dict[str, str]]:
    """A fresh bench database with an organization on the unthrottled plan (`limits` overriding its
    fields), a day budget far above the run, and an API key: the key, and the web server's env."""
    django_on_fresh_database("cognitionos_bench_gateway")
    from decimal import Decimal

    from apps.accounts.principals import Principal
    from apps.apikeys.services import apikey_create
    from apps.llm.services import budget_set
    from apps.tenants.services import organization_create

    actor = Principal.system("bench")
    # Rate limits stay on, set above what the benchmark can send, so every answer is a real one.
    unthrottled_plan("bench", **limits)
    organization = organization_create(
        slug="gateway", name="Gateway bench", owner_email="bench@example.com", plan_code="bench", actor=actor
    )
    budget_set(
        organization=organization, scope="organization", period="day", limit_usd=Decimal(100000), hard=True, actor=actor
    )
    key = apikey_create(organization=organization, name="bench", actor=actor).key
    env = {**os.environ, "LOG_LEVEL": "WARNING", "DEBUG": "false", "DATABASE_POOL_MAX_SIZE": "10"}
    return key, env


# Each request a prompt never sent before (per wrk thread, per run): a cacheable miss.
UNIQUE_PROMPTS = """
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
local sent = 0
request = function()
  sent = sent + 1
  local body = string.gsub(wrk.body, "PROMPT", "question " .. tostring(tid) .. "-" .. tostring(sent))
  return wrk.format(nil, nil, nil, body)
end
"""


_MESSAGES = [{"role": "user", "content": "Benchmark question"}]
# Each case's request body (bench/request_cpu.py sends the same ones).
BODIES: dict[str, dict[str, Any]] = {
    "miss": {"model": "gpt-4o-mini", "messages": _MESSAGES, "max_tokens": 64, "cache": {"skip": True}},
    "hit": {"model": "gpt-4o-mini", "messages": _MESSAGES, "max_tokens": 64},
    # A miss as most calls meet one: the caches looked up (L4 too), then filled.
    "fill": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "PROMPT"}], "max_tokens": 64},
}


def wrk(binary: str, key: str, body: dict[str, object], seconds: int) -> str:
    """wrk at CONNECTIONS connections for `seconds`; a body whose prompt is "PROMPT" is sent with a
    new prompt in each request."""
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
    script.write(
        'wrk.method = "POST"\n'
        # A run's own prefix: the prompts of an earlier run (the warm-up) are cached.
        f"wrk.body = [[{json.dumps(body).replace('PROMPT', f'{uuid.uuid4().hex} PROMPT')}]]\n"
        + (UNIQUE_PROMPTS if "PROMPT" in json.dumps(body) else "")
        + 'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
        'wrk.headers["Host"] = "localhost"\n'
        "shown = false\n"
        "response = function(status, headers, body)\n"
        '  if status ~= 200 and not shown then shown = true; print("first non-2xx: " .. status .. " " .. body) end\n'
        "end\n"
    )
    script.close()
    result = subprocess.run(
        [
            binary,
            "-t",
            "2",
            "-c",
            str(CONNECTIONS),
            "-d",
            f"{seconds}s",
            "--latency",
            # A request slower than wrk's default 2 s would leave the latency figures unseen.
            "--timeout",
            "10s",
            "-s",
            script.name,
            f"http://127.0.0.1:{PORT}/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@dataclass(frozen=True)
class Figures:
    requests: int
    rps: float
    in_service: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    line: str


def _ms(value: str | None) -> float:
    """wrk's latency ("512.00us", "3.21ms", "1.02s") in milliseconds."""
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value or "")
    if not found:
        return float("nan")
    return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[found.group(2)]


def summary(output: str) -> Figures:
    requests = re.search(r"(\d+) requests in", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    mean = re.search(r"Latency\s+([\d.]+\w+)", output)
    p50 = re.search(r"\s50%\s+([\d.]+\w+)", output)
    p99 = re.search(r"\s99%\s+([\d.]+\w+)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    first = re.search(r"first non-2xx: (.*)", output)
    rate = float(rps.group(1)) if rps else 0.0
    in_service = rate * _ms(mean.group(1) if mean else None) / 1000
    line = (
        (
            f"{rate:8.1f} req/s   p50 {p50.group(1) if p50 else '?':>8}   "
            f"p99 {p99.group(1) if p99 else '?':>8}   non-2xx {errors.group(1) if errors else 0}   "
            f"connections in service {in_service:4.1f} of {CONNECTIONS}"
        )
        + (f"  (socket errors: {socket_errors.group(1)})" if socket_errors else "")
        + (f"  (first: {first.group(1)[:160]})" if first else "")
    )
    return Figures(
        requests=int(requests.group(1)) if requests else 0,
        rps=rate,
        in_service=in_service,
        p50_ms=_ms(p50.group(1) if p50 else None),
        p99_ms=_ms(p99.group(1) if p99 else None),
        non_2xx=int(errors.group(1)) if errors else 0,
        line=line,
    )


def measure(
    server: str, *, binary: str, key: str, env: dict[str, str], seconds: int, cases: list[str]
) -> dict[str, Figures]:
    """Start `server`, warm it up, measure `cases` (a miss, a fill, a hit), stop it."""
    process = web_start(server=server, port=PORT, env=env)
    try:
        figures = {}
        for case in cases:
            body = BODIES[case]
            wrk(binary, key, body, 2)  # warm-up: each process loads the API on its first requests
            meter = CpuMeter({"web": process_tree(process.pid)})
            figures[case] = summary(wrk(binary, key, body, seconds))
            print(f"{server:>8}  cache {case + ',':5} 32 clients: {figures[case].line}", flush=True)
            print(f"{'':>8}  {meter.line(max(1, figures[case].requests), 'request')}", flush=True)
        return figures
    finally:
        web_stop(process)


def side_by_side(results: dict[str, list[dict[str, Figures]]]) -> None:
    """Medians over the rounds per server, and each server's ratio to gunicorn's."""
    print(f"side by side, median of {max(len(runs) for runs in results.values())} round(s):")
    medians = {
        server: {
            case: (
                statistics.median(run[case].rps for run in runs),
                statistics.median(run[case].p99_ms for run in runs),
            )
            for case in runs[0]
        }
        for server, runs in results.items()
    }
    base = medians.get("gunicorn")
    for server, cases in medians.items():
        parts = []
        for case, (rps, p99) in cases.items():
            ratio = f" ({rps / base[case][0]:.2f}x gunicorn)" if base and server != "gunicorn" and base[case][0] else ""
            parts.append(f"{case} {rps:7.1f} req/s p99 {p99:7.1f} ms{ratio}")
        print(f"  {server:>8}: " + ";  ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--server", choices=[*SERVERS, "both"], default="granian")
    parser.add_argument("--rounds", type=int, default=1, help="With --server both: rounds, the order alternating")
    parser.add_argument(
        "--cases",
        default="miss,fill,hit",
        help="What to measure (comma-separated): miss (cache skipped), fill (a new prompt: the caches "
        "looked up, then filled), hit",
    )
    args = parser.parse_args()
    binary = ensure_wrk()
    key, env = setup()
    from tests.support.fake_provider import FakeProvider

    fake = FakeProvider().start()
    env.update(OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=fake.openai_base_url)
    servers = list(SERVERS) if args.server == "both" else [args.server]
    results: dict[str, list[dict[str, Figures]]] = {server: [] for server in servers}
    try:
        for round_number in range(args.rounds):
            # Alternate the order so that neither server always runs on the warmer (or busier) machine.
            for server in servers if round_number % 2 == 0 else servers[::-1]:
                results[server].append(
                    measure(server, binary=binary, key=key, env=env, seconds=args.seconds, cases=args.cases.split(","))
                )
    finally:
        fake.stop()
    if len(servers) > 1 or args.rounds > 1:
        side_by_side(results)


if __name__ == "__main__":
    main()
