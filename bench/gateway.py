"""Gateway throughput: requests per second and latency at 32 concurrent clients, with keys, rate
limits, budgets and the ledger on, on a cache miss and on a cache hit.

    .venv/bin/python bench/gateway.py [--seconds 10]

Starts gunicorn (the production configuration, 2 processes x 8 threads) on its own database in
the bench servers (.data/bench) and drives it with wrk (Debian package `wrk`; installed here if
missing). The provider is the fake server at 0 ms latency. Not a test: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._setup import django_on_fresh_database, gunicorn_start, gunicorn_stop  # noqa: E402 - after the path is set

PORT = 18321


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or "wrk"


def setup() -> tuple[str, dict[str, str]]:
    django_on_fresh_database("cognitionos_bench_gateway")
    from decimal import Decimal

    from apps.accounts.principals import Principal
    from apps.apikeys.services import apikey_create
    from apps.billing.models import Plan
    from apps.llm.services import budget_set
    from apps.tenants.services import organization_create

    actor = Principal.system("bench")
    # Rate limits stay on, set above what the benchmark can send, so every answer is a real one.
    Plan.objects.create(
        code="bench", name="Benchmark", limits={"requests_per_minute": 10**7, "tokens_per_minute": 10**10}
    )
    organization = organization_create(
        slug="gateway", name="Gateway bench", owner_email="bench@example.com", plan_code="bench", actor=actor
    )
    budget_set(
        organization=organization, scope="organization", period="day", limit_usd=Decimal(100000), hard=True, actor=actor
    )
    key = apikey_create(organization=organization, name="bench", actor=actor).key
    env = {**os.environ, "LOG_LEVEL": "WARNING", "DEBUG": "false", "DATABASE_POOL_MAX_SIZE": "10"}
    return key, env


def wrk(binary: str, key: str, body: dict[str, object], seconds: int) -> str:
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
    script.write(
        'wrk.method = "POST"\n'
        f"wrk.body = [[{json.dumps(body)}]]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
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
            "32",
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            script.name,
            f"http://127.0.0.1:{PORT}/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def summary(output: str) -> str:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"\s50%\s+([\d.]+\w+)", output)
    p99 = re.search(r"\s99%\s+([\d.]+\w+)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    first = re.search(r"first non-2xx: (.*)", output)
    return (
        f"{float(rps.group(1)) if rps else 0:8.1f} req/s   p50 {p50.group(1) if p50 else '?':>8}   "
        f"p99 {p99.group(1) if p99 else '?':>8}   non-2xx {errors.group(1) if errors else 0}"
    ) + (f"  (first: {first.group(1)[:160]})" if first else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    binary = ensure_wrk()
    key, env = setup()
    from tests.support.fake_provider import FakeProvider

    fake = FakeProvider().start()
    env.update(OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=fake.openai_base_url)
    server = gunicorn_start(port=PORT, env=env)
    try:
        messages = [{"role": "user", "content": "Benchmark question"}]
        miss = {"model": "gpt-4o-mini", "messages": messages, "max_tokens": 64, "cache": {"skip": True}}
        hit = {"model": "gpt-4o-mini", "messages": messages, "max_tokens": 64}
        wrk(binary, key, miss, 2)  # warm-up
        print(f"cache miss, 32 clients: {summary(wrk(binary, key, miss, args.seconds))}")
        wrk(binary, key, hit, 2)
        print(f"cache hit,  32 clients: {summary(wrk(binary, key, hit, args.seconds))}")
    finally:
        gunicorn_stop(server)
        fake.stop()


if __name__ == "__main__":
    main()
